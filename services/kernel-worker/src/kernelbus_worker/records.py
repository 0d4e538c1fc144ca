"""The one writer of this worker's kernel records to the registry, and so the one place that
clears a kernel's unsaved mark (`ManagedKernel.unsaved`): just before a write, set again if
the write fails, so a later activity flush writes it instead of forgetting it.

On a REST path (start, restart, shutdown) a write waits at most `bounded.BOUND` seconds: a
stream electing its leader (a NATS cluster lost a node) answers nothing for 4-9 s, and this
worker's memory is what is authoritative for its kernels anyway. A put that got no answer
stays marked unsaved; a delete that got none joins `pending_deletes`; the activity flush
(`flush_pending`, `save_changed`) writes both as soon as JetStream answers again (ADR 0023).

A record kept unsaved that way is also written to `pending_dir` (the kernels' runtime dir,
`kernelbus-record-<id>.json`) until the registry has it, and a pending delete is noted there
too (`kernelbus-deleted-<id>.json`): a successor that re-adopts this worker's kernels after a
crash reads both (`kept`, `kept_deletes`). Else a kernel started during an election would have
no record to be re-adopted from (and be reaped as a leftover), and one shut down would come
back (declared dead) from its old record.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import ValidationError

from kernelbus.bounded import BOUND, UNANSWERED
from kernelbus.models import KernelRecord
from kernelbus.registry import Registry
from kernelbus_worker.kernel import ManagedKernel

log = logging.getLogger(__name__)


class KernelRecords:
    def __init__(
        self,
        registry: Registry,
        worker_id: str = "",
        bound: float = BOUND,
        pending_dir: Path | None = None,
    ) -> None:
        self.registry = registry
        self.worker_id = worker_id
        self.pending_dir = pending_dir
        self.bound = bound
        self.pending_deletes: set[str] = set()
        """Kernels shut down whose record removal JetStream has not confirmed yet."""

    async def save(self, kernel: ManagedKernel, bound: float | None = None) -> None:
        """Write the kernel's record now; raises what the registry raised (the record stays
        marked unsaved)."""
        self._forget_delete(kernel.id)  # started again under the same id
        kernel.take_unsaved()
        try:
            await self.registry.put_kernel(kernel.record, bound)
        except BaseException:
            kernel.record_changed()  # e.g. NATS down: written on a later pass, not forgotten
            raise
        self._unkeep(kernel.id)

    async def save_or_keep(self, kernel: ManagedKernel) -> bool:
        """`save` within `bound`; when JetStream does not answer in time the record stays
        marked unsaved for the activity flush, and the caller goes on. True if written."""
        try:
            await self.save(kernel, self.bound)
        except UNANSWERED as exc:
            kernel.log.warning(
                "registry write pending (%s): the activity flush writes it", exc.message
            )
            self._keep(kernel.record)
            return False
        return True

    async def delete(self, kernel_id: str) -> bool:
        """Remove the kernel's record within `bound`; else it is removed by `flush_pending`.
        True if removed now."""
        self._forget_delete(kernel_id)
        self._unkeep(kernel_id)  # shut down: nothing left to re-adopt
        try:
            await self.registry.delete_kernel(kernel_id, self.bound)
        except UNANSWERED as exc:
            self.note_delete(kernel_id)
            log.warning(
                "registry delete pending (%s): the activity flush removes it",
                exc.message,
                extra={"kernel_id": kernel_id, "worker_id": self.worker_id},
            )
            return False
        return True

    async def flush_pending(self) -> None:
        """Remove the records of `pending_deletes`; raises at the first that fails (those
        left stay pending)."""
        for kernel_id in sorted(self.pending_deletes):
            await self.registry.delete_kernel(kernel_id)
            self._forget_delete(kernel_id)
            log.info(
                "pending registry delete done",
                extra={"kernel_id": kernel_id, "worker_id": self.worker_id},
            )

    async def save_changed(self, kernel: ManagedKernel) -> bool:
        """`save` if the record changed since it was last written and no restart or shutdown
        owns the kernel (their own writes come when they end). True if written."""
        if not kernel.unsaved or kernel.state.in_transition:
            return False
        await self.save(kernel)
        return True

    # --- records kept in the runtime dir until the registry has them ----------------------

    def note_delete(self, kernel_id: str) -> None:
        """Remove the kernel's record on the next flush (noted in `pending_dir` too)."""
        self.pending_deletes.add(kernel_id)
        path = self._kept_file(kernel_id, _DELETED_PREFIX)
        if path is not None:
            self._write(path, self.worker_id.encode(), kernel_id)

    def kept_deletes(self) -> set[str]:
        """Kernels of this worker id a (crashed) worker shut down without removing their
        records (noted in `pending_dir`)."""
        if self.pending_dir is None:
            return set()
        found = set()
        for path in self.pending_dir.glob(f"{_DELETED_PREFIX}*.json"):
            try:
                if path.read_bytes().decode() == self.worker_id:
                    found.add(path.stem.removeprefix(_DELETED_PREFIX))
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("unreadable delete note %s: %s", path.name, exc)
        return found

    def _forget_delete(self, kernel_id: str) -> None:
        self.pending_deletes.discard(kernel_id)
        path = self._kept_file(kernel_id, _DELETED_PREFIX)
        if path is not None:
            path.unlink(missing_ok=True)

    def kept(self) -> list[KernelRecord]:
        """This worker id's records a (crashed) worker kept in `pending_dir` unwritten."""
        if self.pending_dir is None:
            return []
        found = []
        for path in sorted(self.pending_dir.glob(f"{_KEPT_PREFIX}*.json")):
            try:
                record = KernelRecord.model_validate_json(path.read_bytes())
            except (OSError, ValidationError) as exc:
                log.warning("unreadable kept record %s: %s", path.name, exc)
                continue
            if record.worker_id == self.worker_id:
                found.append(record)
        return found

    def _kept_file(self, kernel_id: str, prefix: str = "") -> Path | None:
        if self.pending_dir is None:
            return None
        return self.pending_dir / f"{prefix or _KEPT_PREFIX}{kernel_id}.json"

    def _keep(self, record: KernelRecord) -> None:
        path = self._kept_file(record.id)
        if path is not None:
            self._write(path, record.model_dump_json().encode(), record.id)

    def _write(self, path: Path, data: bytes, kernel_id: str) -> None:
        part = path.with_suffix(".part")
        try:
            part.write_bytes(data)
            os.replace(part, path)
        except OSError as exc:
            log.warning(
                "cannot keep %s: %s",
                path,
                exc,
                extra={"kernel_id": kernel_id, "worker_id": self.worker_id},
            )

    def _unkeep(self, kernel_id: str) -> None:
        path = self._kept_file(kernel_id)
        if path is not None:
            path.unlink(missing_ok=True)


_KEPT_PREFIX = "kernelbus-record-"
_DELETED_PREFIX = "kernelbus-deleted-"
