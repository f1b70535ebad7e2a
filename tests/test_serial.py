"""embedx.serial.plain: values as plain YAML/JSON-safe Python."""

import json
from pathlib import Path

import numpy as np
import yaml

from embedx.serial import plain


def test_plain_converts_recursively():
    value = {
        1: (np.float32(0.5), np.int64(3)),
        "set": {"b", "a"},
        "array": np.arange(3, dtype=np.int16),
        "path": Path("x/y.wav"),
        "nested": [{"k": np.bool_(True)}, None, "s", 2.5],
    }
    out = plain(value)
    assert out == {
        "1": [0.5, 3],
        "set": ["a", "b"],
        "array": [0, 1, 2],
        "path": str(Path("x/y.wav")),
        "nested": [{"k": True}, None, "s", 2.5],
    }
    assert type(out["1"][1]) is int and type(out["nested"][0]["k"]) is bool
    assert json.loads(json.dumps(out)) == out
    assert yaml.safe_load(yaml.safe_dump(out)) == out


def test_plain_makes_a_tuple_and_a_list_compare_equal():
    assert plain({"layers": (0, 6)}) == plain({"layers": [np.int64(0), 6]})
