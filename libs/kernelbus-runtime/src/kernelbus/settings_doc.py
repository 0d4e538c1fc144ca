"""The configuration table of README.md, generated from the settings classes themselves.

`python -m kernelbus.settings_doc` prints it; `--update README.md` rewrites the table between
its markers (`make readme`); a test checks README.md names every variable.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

SERVICES = (
    ("all services", "kernelbus.settings", "BusSettings"),
    ("api", "kernelbus_api.settings", "ApiSettings"),
    ("kernel-worker", "kernelbus_worker.settings", "WorkerSettings"),
    ("culler", "kernelbus_culler.settings", "CullerSettings"),
    ("events", "kernelbus_events.settings", "EventsSettings"),
    ("launcher", "kernelbus.launcher_settings", "LauncherSettings"),
)


def settings_class(module: str, name: str) -> type[BaseSettings]:
    cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
    return cls


def env_names(cls: type[BaseSettings], field_name: str, field: FieldInfo) -> list[str]:
    """The environment variables that set `field_name` (aliases first, else prefix + name)."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    prefix = str(cls.model_config.get("env_prefix", ""))
    return [f"{prefix}{field_name}".upper()]


def rows(own_only: bool = True) -> Iterator[tuple[str, str, str, str]]:
    """(service, variable, default, description) for every setting."""
    base = settings_class("kernelbus.settings", "BusSettings")
    for service, module, name in SERVICES:
        cls = settings_class(module, name)
        for field_name, field in cls.model_fields.items():
            if own_only and cls is not base and field_name in base.model_fields:
                continue
            default = "(generated)" if field.default_factory is not None else repr(field.default)
            variable = " / ".join(f"`{n}`" for n in env_names(cls, field_name, field))
            yield service, variable, default, (field.description or "").replace("|", "\\|")


def table() -> str:
    lines = ["| Service | Variable | Default | Meaning |", "|---|---|---|---|"]
    lines += [f"| {s} | {v} | `{d}` | {m} |" for s, v, d, m in rows()]
    return "\n".join(lines)


START = "<!-- settings-table:start (make readme) -->"
END = "<!-- settings-table:end -->"


def update(path: Path) -> None:
    text = path.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table()}\n{END}{tail}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--update":
        update(Path(sys.argv[2]))
    else:
        print(table())
