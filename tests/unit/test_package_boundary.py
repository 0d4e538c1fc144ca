"""The contracts distribution (`libs/kernelbus-core`) stays contracts (ADR 0022).

An outside program that only wants the wire formats installs kernelbus-core: none of its
modules may import a runtime module of the shared `kernelbus` namespace (those live in
`libs/kernelbus-runtime`) nor a runtime library (nats-py, OpenTelemetry, prometheus_client,
psutil). Checked by walking each module's AST, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

LIBS = Path(__file__).resolve().parents[2] / "libs"
CONTRACTS = LIBS / "kernelbus-core" / "src" / "kernelbus"
RUNTIME = LIBS / "kernelbus-runtime" / "src" / "kernelbus"
RUNTIME_LIBRARIES = {"nats", "opentelemetry", "prometheus_client", "psutil", "pydantic_settings"}


def _modules(root: Path) -> set[str]:
    """Dotted names (`kernelbus.x`, `kernelbus.testing`, ...) of the modules under `root`."""
    names: set[str] = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.add(".".join(parts))
    return names


def _imports(source: str) -> set[str]:
    """Every absolute module an import statement names (`from a import b` gives `a` and
    `a.b`: `b` may be a submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _violations(imported: set[str], runtime_modules: set[str]) -> set[str]:
    def is_runtime(name: str) -> bool:
        top = name.split(".")[0]
        return top in RUNTIME_LIBRARIES or any(
            name == module or name.startswith(module + ".") for module in runtime_modules
        )

    return {name for name in imported if is_runtime(name)}


CONTRACT_FILES = sorted(CONTRACTS.rglob("*.py"))


def test_both_halves_are_where_the_test_looks() -> None:
    assert len(CONTRACT_FILES) >= 10
    assert {"kernelbus.bus", "kernelbus.launcher", "kernelbus.testing"} <= _modules(RUNTIME)
    assert not (CONTRACTS / "__init__.py").exists(), "kernelbus is a namespace package"
    assert not (RUNTIME / "__init__.py").exists(), "kernelbus is a namespace package"


def test_no_module_is_in_both_distributions() -> None:
    assert not _modules(CONTRACTS) & _modules(RUNTIME)


@pytest.mark.parametrize("path", CONTRACT_FILES, ids=lambda p: p.name)
def test_a_contracts_module_imports_no_runtime_module_or_library(path: Path) -> None:
    assert not _violations(_imports(path.read_text()), _modules(RUNTIME))


def test_the_contracts_distribution_does_not_depend_on_a_runtime_library() -> None:
    project = tomllib.loads((CONTRACTS.parents[1] / "pyproject.toml").read_text())["project"]
    declared = " ".join(project["dependencies"]).lower().replace("_", "-")
    for library in ("nats-py", "opentelemetry", "prometheus-client", "psutil", "kernelbus-runtime"):
        assert library not in declared


def test_the_check_catches_each_kind_of_violation() -> None:
    runtime = {"kernelbus.bus", "kernelbus.testing"}
    source = (
        "import json\nfrom kernelbus import subjects, bus\nfrom kernelbus.testing.plugin import x\n"
        "def f():\n    import psutil\n    from nats.js import api\n"
    )
    assert _violations(_imports(source), runtime) == {
        "kernelbus.bus",
        "kernelbus.testing.plugin",
        "kernelbus.testing.plugin.x",
        "psutil",
        "nats.js",
        "nats.js.api",
    }
