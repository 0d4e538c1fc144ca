"""`kernelbus.fastjson.loads` reads what `json.loads` reads, for every text either accepts
(integers beyond 64 bits aside: see its docstring)."""

from __future__ import annotations

import json
import math

import pytest

from kernelbus import fastjson


@pytest.mark.parametrize(
    "text",
    [
        b'{"msg_id": "a", "msg_type": "status", "version": "5.3"}',
        b"{}",
        b"[1, 2.5, null, true, false]",
        '{"text": "caf\u00e9 \\u00e9"}'.encode(),
        b'{"a": 1, "a": 2}',  # the last duplicate wins in both
        b'{"lone": "\\ud800"}',  # a lone surrogate: orjson refuses
        b'{"n": -0.0, "e": 1e-7}',
        '{"as": "str"}',
    ],
)
def test_the_same_value_as_the_json_module(text: bytes | str) -> None:
    assert fastjson.loads(text) == json.loads(text)


def test_nan_and_infinity_as_the_json_module_reads_them() -> None:
    value = fastjson.loads(b'{"x": NaN, "y": Infinity, "z": -Infinity}')
    assert math.isnan(value["x"])
    assert value["y"] == math.inf and value["z"] == -math.inf


@pytest.mark.parametrize("text", [b"", b"{", b'{"a": }', b"\xff\xfe{}", b"nope", b'{"a": 1} x'])
def test_what_neither_accepts_raises_a_value_error(text: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        fastjson.loads(text)


def test_an_integer_beyond_64_bits_is_read_as_a_float() -> None:
    """The documented difference: why a value passed on is parsed with the json module."""
    assert fastjson.loads(b'{"big": 123456789012345678901234567890}') == {
        "big": 1.2345678901234568e29
    }
    assert fastjson.loads(b'{"n": 18446744073709551615}') == {"n": 18446744073709551615}
