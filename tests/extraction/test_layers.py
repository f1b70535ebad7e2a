"""The layer-spec grammar shared by stage 1 (a model's layers) and stage 2 (a set's stored layers)."""

import re

import pytest

from embedx.errors import ConfigError, StoreError
from embedx.extraction.layers import parse_layers, parse_terms, select_layers


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


# --- one grammar for both stages: the same spec over a feature set's stored layers -----------

STORED = (0, 4, 8, 12)


@pytest.mark.parametrize("spec,expected", [
    ("all", [0, 4, 8, 12]),
    ("last", [12]),
    ("-1", [12]),             # -K counts over the available (stored) layers: -1 is always `last`
    ("-2", [8]),
    ("-4,0", [0]),
    ("4:9", [4, 8]),          # a range selects the stored layers numbered 4..8
    (":-1", [0, 4, 8]),       # negative bound: back from one past the highest layer number
    ("8:", [8, 12]),
    ("ALL,4", [0, 4, 8, 12]),
    ([12, -4], [0, 12]),
])
def test_stored_layer_specs(spec, expected):
    assert select_layers(spec, STORED, "hubert") == expected


MODEL = list(range(13))  # plain Python indexing and slicing of a 12-block model: the reference


@pytest.mark.parametrize("spec,reference", [
    ("all", MODEL),
    ("last", [MODEL[-1]]),
    ("-1", [MODEL[-1]]),
    ("-3", [MODEL[-3]]),
    ("0,6,12", [0, 6, 12]),
    ("4:9", MODEL[4:9]),
    (":3", MODEL[:3]),
    ("10:", MODEL[10:]),
    (":-1", MODEL[:-1]),
    ("-4:-1", MODEL[-4:-1]),
    ("0,4:6,-2", sorted({0, *MODEL[4:6], MODEL[-2]})),
])
def test_both_stages_agree_when_every_layer_is_available(spec, reference):
    # extraction sees the model's layers 0..12; fitting, a set that stored all of them
    assert parse_layers(spec, 13) == reference
    assert select_layers(spec, range(13), "s") == reference


@pytest.mark.parametrize("spec,error,match", [
    ("5", StoreError, "feature set 'hubert' has no layer 5; stored layers: 0, 4, 8, 12"),
    ("-5", StoreError, "layer -5 out of range for feature set 'hubert'; stored layers: 0, 4, 8, 12"),
    ("1:4", StoreError, "layer range '1:4' selects no stored layer of feature set 'hubert'"),
    ("20:30", ConfigError, "layer range '20:30' selects no layer"),
    ("0,x", ConfigError, "bad layer 'x' in '0,x'"),
    (" , ", ConfigError, "empty layer spec ' , '"),
])
def test_stored_layer_errors_quote_the_bad_value(spec, error, match):
    with pytest.raises(error, match=re.escape(match)):
        select_layers(spec, STORED, "hubert")


def test_form_only_before_the_model_is_known():
    assert parse_layers("0,99,-40,4:1000", None) == []   # numbers are checked once the model is
    with pytest.raises(ConfigError, match=re.escape("layer range '5:3' selects no layer")):
        parse_layers("5:3", None)
    with pytest.raises(ConfigError, match=re.escape("bad layer '1-3'")):
        parse_layers("1-3", None)
    terms = parse_terms("all, -2 ,4:")
    assert [(t.kind, t.index, t.start, t.stop) for t in terms] == [
        ("all", 0, None, None), ("index", -2, None, None), ("range", 0, 4, None)]
