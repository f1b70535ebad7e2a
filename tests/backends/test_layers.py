import pytest

from embedx.backends import parse_layers
from embedx.errors import ConfigError


@pytest.mark.parametrize("spec,expected", [
    ("all", list(range(13))),
    ("last", [12]),
    ("-1", [12]),
    ("0,6,12", [0, 6, 12]),
    ("12,0,6,6", [0, 6, 12]),
    ("4:9", [4, 5, 6, 7, 8]),
    (":3", [0, 1, 2]),
    ("10:", [10, 11, 12]),
    ("0,4:6,-2", [0, 4, 5, 11]),
    ([3, -1], [3, 12]),
])
def test_layer_specs(spec, expected):
    assert parse_layers(spec, 13) == expected


@pytest.mark.parametrize("spec,match", [("13", "out of range"), ("-14", "out of range"), ("x", "bad layer"),
                                        ("5:5", "selects no layer"), ("", "empty")])
def test_bad_layer_specs(spec, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_layers(spec, 13)
    assert "0..12" in str(err.value)
