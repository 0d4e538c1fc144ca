"""The warm-pool setting's syntax."""

from __future__ import annotations


def parse_pool_sizes(value: str) -> dict[str, int]:
    """`python3=2,other=1` → {"python3": 2, "other": 1}; raises ValueError on bad input."""
    sizes: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, count = item.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit():
            raise ValueError(f"pool entries look like name=count, not {item!r}")
        sizes[name.strip()] = int(count)
    return sizes
