"""How `make test` spreads the suite over pytest-xdist workers (`-n N --dist loadfile`).

As xdist's own `loadfile`, every test of a file runs on one worker, so a module's fixtures are
set up once and a `scenario` module keeps its steps together; in addition every file under
`tests/e2e/` is one unit: those tests install and start system services (apt, dockerd,
Chromium) and whole stacks, and run one after another on one worker, while the other workers
take the other files. (A scope from the nodeid's path, not from a marker: xdist's
`xdist_group` marker does not reach its scheduler under pytest 9.2, whose nodeid is no longer
the attribute xdist rewrites.)
"""

from __future__ import annotations

from xdist.scheduler import LoadFileScheduling

E2E_DIR = "tests/e2e/"


def scope_of(nodeid: str) -> str:
    """The unit a test is scheduled with: its file, or `E2E_DIR` for every e2e test."""
    path = nodeid.split("::", 1)[0]
    return E2E_DIR if path.startswith(E2E_DIR) else path


class FilesWithE2ETogether(LoadFileScheduling):  # type: ignore[misc]  # xdist has no types
    def _split_scope(self, nodeid: str) -> str:
        return scope_of(nodeid)
