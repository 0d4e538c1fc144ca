"""The jupyter_server event handler imports nothing but the standard library.

jupyter_server loads `kernelbus_jupyter.events` into its own process, so a third-party import
there (nats-py, OpenTelemetry, pydantic, even `kernelbus`) would become a dependency of every
jupyter_server that forwards its events to Kernelbus.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import kernelbus_jupyter.events

MODULE = Path(kernelbus_jupyter.events.__file__)


def _top_level_imports(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import reaches into kernelbus_jupyter itself
                names.add("kernelbus_jupyter")
            elif node.module is not None:
                names.add(node.module.split(".")[0])
    return names


def test_the_handler_module_imports_only_the_standard_library() -> None:
    imports = _top_level_imports(MODULE.read_text())
    assert imports, "the walk found no imports at all: it is not reading the module"
    assert "urllib" in imports
    outside = {name for name in imports if name not in sys.stdlib_module_names}
    assert outside == set()


def test_the_walk_sees_a_third_party_import() -> None:
    found = _top_level_imports("import json\nfrom nats.aio import client\nfrom . import x\n")
    assert found - set(sys.stdlib_module_names) == {"nats", "kernelbus_jupyter"}
