"""The configuration table of README.md, generated from the settings classes themselves.

`python -m kernelbus.settings_doc` prints it; `--update README.md` rewrites the table between
its markers (`make readme`); a test checks README.md names every variable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

GROUP = "kernelbus.settings"
"""Entry points naming each settings class (in each distribution's pyproject.toml), so that
the runtime names no service: `<order>-<service> = "module:Class"`."""


def settings_classes() -> list[tuple[str, type[BaseSettings]]]:
    """(service, settings class) of every installed distribution, in their declared order."""
    found = []
    for point in sorted(entry_points(group=GROUP), key=lambda p: p.name):
        cls = point.load()
        if not (isinstance(cls, type) and issubclass(cls, BaseSettings)):
            raise TypeError(f"entry point {point.name} of {GROUP} is not a settings class")
        found.append((point.name.partition("-")[2], cls))
    return found


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
    classes = settings_classes()
    base = classes[0][1]  # the settings every service shares (`BusSettings`)
    for service, cls in classes:
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
