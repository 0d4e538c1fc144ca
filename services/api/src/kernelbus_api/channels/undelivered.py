"""Client messages that reached no worker, sent again once one is there (ADR 0021, 0023).

Each client message is published to `kb.kernel.<id>.in` with a reply subject naming its
connection and a sequence number. Nobody answers it: but when no subscriber exists (the kernel's
worker is restarting, or reconnecting to another node of a cluster), NATS sends a
"no responders" status (503) to that reply subject at once. The api then holds the message and
re-attaches the connection; once the worker answers, the held messages go out again, in their
original order. In the normal case this costs a reply subject per message and nothing else.

A message can also be lost without that status (published in the instant a cluster node dies,
into a route the server had not yet dropped). A re-attach therefore names the messages still
kept here (`SentInputs.kept`); the worker answers with those it never received, and they are
sent again too (ADR 0024).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field

from kernelbus import subjects

Held = tuple[int, bytes]
"""(sequence number, bus frame) of a client message not (yet) delivered."""

KEEP = 64
"""Client messages per connection kept for a resend: NATS says within one round trip to the
server when nobody received one (ADR 0021); a worker names those lost on the way when the
connection re-attaches (ADR 0024)."""
KEEP_BYTES = 32 * 1024 * 1024


@dataclass
class SentInputs:
    """The last client messages one connection published, by sequence number."""

    keep: int = KEEP
    keep_bytes: int = KEEP_BYTES
    _next: int = 0
    _sent: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    _bytes: int = 0
    _forgotten_below: int = 0

    def next_seq(self) -> int:
        self._next += 1
        return self._next

    @property
    def given(self) -> int:
        """The highest sequence number given so far (0: none)."""
        return self._next

    def kept(self) -> list[int]:
        """Sequence numbers of the messages kept (published, not taken back), oldest first."""
        return list(self._sent)

    def sent(self, seq: int, frame: bytes) -> None:
        self._sent[seq] = frame
        self._bytes += len(frame)
        while len(self._sent) > self.keep or (self._bytes > self.keep_bytes and self._sent):
            old, old_frame = self._sent.popitem(last=False)
            self._bytes -= len(old_frame)
            self._forgotten_below = old + 1

    def undelivered(self, seq: int) -> bytes | None:
        """The message `seq`, which NATS said reached nobody; None if already taken back (a
        chunked message gets one status per chunk) or no longer kept (`forgotten`)."""
        taken = self._sent.pop(seq, None)
        if taken is not None:
            self._bytes -= len(taken)
        return taken

    def forgotten(self, seq: int) -> bool:
        return seq < self._forgotten_below


def hold(held: list[Held], item: Held) -> None:
    """Insert in sequence order: a message NATS returned goes before those sent after it."""
    bisect.insort(held, item, key=lambda h: h[0])


def parse_reply_subject(api_instance: str, subject: str) -> tuple[str, int] | None:
    """(conn_id, seq) of a reply subject made by `subjects.input_reply` for this replica; None if it
    is not one."""
    parsed = subjects.parse_input_reply(subject)
    if parsed is None or parsed.api_instance != api_instance:
        return None
    return parsed.conn_id, parsed.seq


def no_responders(headers: dict[str, str] | None) -> bool:
    """Whether a message is NATS's "no responders" status (503, empty body)."""
    return (headers or {}).get("Status") == "503"
