"""deploy/nats/ for the tests: its render.py (stdlib only, not a package) loaded as a module."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

NATS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "nats"


def render_module() -> ModuleType:
    """`deploy/nats/render.py`: compose's NATS users, permissions and config blocks."""
    spec = importlib.util.spec_from_file_location("render_nats", NATS_DIR / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
