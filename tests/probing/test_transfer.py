"""Cross-corpus transfer (`--domain`, `--label-map`) against direct scikit-learn fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import embedx
from embedx.errors import ConfigError, DataError
from embedx.probing.label_map import read_label_map

from .conftest import LAYERS, planted, write_store


def _store(tmp_path, labels=None, name="t.h5"):
    """Planted store, speakers 0-11; corpus A: even speakers, B: odd ones."""
    items, pooled = planted()
    spk = items["speaker"].str[1:].astype(int).to_numpy()
    items["corpus"] = np.where(spk % 2 == 0, "A", "B")
    if labels is not None:
        items["label"] = labels(items)
    return write_store(tmp_path / name, items, {"toy": (pooled, LAYERS)}), items, pooled


def _logreg():
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=0))


def test_transfer_entries_equal_direct_fits(tmp_path):
    path, items, pooled = _store(tmp_path)
    res = embedx.fit(path, output=tmp_path / "out", domain="corpus", layers="3,4", models="logreg",
                     bootstrap=50, save_model=False, progress=False)
    table = pd.read_csv(tmp_path / "out" / "transfer.csv")
    assert len(table) == 2 * 2 * 2  # 2 layers x (2 train x 2 test domains)
    y = items["label"].to_numpy()
    corpus = items["corpus"].to_numpy()
    groups = items["speaker"].to_numpy()
    for layer in (3, 4):
        X = pooled[LAYERS.index(layer)]  # (num_items, dim)
        for a in "AB":
            for b in "AB":
                row = table[(table["layer"] == layer) & (table["train_domain"] == a) & (table["test_domain"] == b)]
                assert len(row) == 1
                row = row.iloc[0]
                if a != b:
                    pred = _logreg().fit(X[corpus == a], y[corpus == a]).predict(X[corpus == b])
                    expected = balanced_accuracy_score(y[corpus == b], pred)
                    assert not row["within"] and row["n_train"] == 60 and row["n_test"] == 60
                else:
                    # grouped CV inside the domain: 5 folds over its 6 speakers, the study's seed
                    rows = np.flatnonzero(corpus == a)
                    pred = np.empty(len(rows), dtype=object)
                    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
                    for tr, te in cv.split(X[rows], y[rows], groups[rows]):
                        pred[te] = _logreg().fit(X[rows][tr], y[rows][tr]).predict(X[rows][te])
                    expected = balanced_accuracy_score(y[rows], pred.astype(str))
                    assert row["within"]
                assert row["score"] == pytest.approx(expected, abs=1e-12)
                assert row["ci_low"] <= row["score"] <= row["ci_high"]
                assert row["n_test_speakers"] == 6
    assert res.study.analyses["transfer"].domains.names == ["A", "B"]
    pngs = sorted(p.name for p in (tmp_path / "out").glob("transfer_*.png"))
    assert pngs == ["transfer_toy_mean_logreg.png"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Cross-corpus transfer" in report and "transfer_toy_mean_logreg.png" in report


def _raw_labels(items):
    # corpus A names its classes c0/c1/c2, corpus B names them x0/x1/x2 and adds a class "odd"
    labels = items["label"].to_numpy().astype(object).copy()
    b = (items["corpus"] == "B").to_numpy()
    labels[b] = np.char.replace(labels[b].astype(str), "c", "x")
    labels[b & (np.arange(len(items)) % 10 == 0)] = "odd"
    return labels


def test_label_map_aligns_and_reports_unmatched(tmp_path):
    path, items, _ = _store(tmp_path, labels=_raw_labels)
    lmap = tmp_path / "map.yaml"
    lmap.write_text("c0: zero\nc1: one\nc2: two\nB:\n  x0: zero\n  x1: one\n  x2: two\n")
    notes = []
    res = embedx.fit(path, output=tmp_path / "out", domain="corpus", label_map=lmap, layers="3",
                     models="logreg", bootstrap=0, save_model=False, progress=False, log=notes.append)
    ds = res.study.dataset
    odd = int((_raw_labels(items) == "odd").sum())
    assert ds.classes == ["one", "two", "zero"] and ds.num_items == len(items) - odd
    assert ds.skipped["unmatched label (--label-map)"] == odd
    unmatched = pd.read_csv(tmp_path / "out" / "unmatched_labels.csv")
    assert unmatched.to_dict("records") == [{"label": "odd", "domain": "B", "count": odd}]
    assert any("unmatched labels" in n and "'odd' in B" in n for n in notes)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| odd | B |" in report
    # the mapped labels are the original classes under new names
    truth = planted()[0]["label"].to_numpy()[_raw_labels(items) != "odd"]
    names = {"c0": "zero", "c1": "one", "c2": "two"}
    assert [ds.classes[k] for k in ds.y] == [names[t] for t in truth]


def test_label_map_formats_and_errors(tmp_path):
    good = tmp_path / "m.yaml"
    good.write_text("ang: angry\n1: one\ncrema:\n  ANG: angry\n  ang: neutral\n")
    lmap = read_label_map(good)
    assert lmap.map("crema", "ang") == "neutral"  # the domain's own entry wins
    assert lmap.map("emodb", "ang") == "angry"
    assert lmap.map("emodb", "1") == "one"
    assert lmap.map("emodb", "angry") == "angry"  # already a shared label
    assert lmap.map("emodb", "sad") is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [b\n")
    with pytest.raises(ConfigError, match=r"label_map '.*bad\.yaml' is not valid YAML"):
        read_label_map(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"must be a non-empty mapping; accepted: \{raw_label"):
        read_label_map(empty)
    with pytest.raises(ConfigError, match="cannot read label_map"):
        read_label_map(tmp_path / "missing.yaml")


def test_domain_validation(tmp_path):
    path, _, _ = _store(tmp_path)
    with pytest.raises(DataError, match=r"domain 'corpora': no such item column; available: .*corpus"):
        embedx.fit(path, output=None, domain="corpora", progress=False)
    with pytest.raises(DataError, match=r"domain 'pooled_flag' has a single value"):
        items, pooled = planted()
        items["pooled_flag"] = "x"
        one = write_store(tmp_path / "one.h5", items, {"toy": (pooled, LAYERS)})
        embedx.fit(one, output=None, domain="pooled_flag", progress=False)
    with pytest.raises(ConfigError, match="label_map .* name the domain column with domain='COLUMN'"):
        embedx.fit(path, output=None, label_map="m.yaml", progress=False)
    lmap = tmp_path / "m.yaml"
    lmap.write_text("c0: zero\n")
    with pytest.raises(ConfigError, match="label_map aligns class labels, but 'arousal' is a regression target"):
        embedx.fit(path, output=None, label="arousal", domain="corpus", label_map=lmap, progress=False)
    assert not (tmp_path / "results").exists()


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_a_single_class_domain_is_tested_on_not_trained_on(tmp_path):
    items, pooled = planted()
    spk = items["speaker"].str[1:].astype(int).to_numpy()
    items["corpus"] = np.where(spk % 2 == 0, "A", "B")
    items.loc[spk == 1, "corpus"] = "C"
    items.loc[(items["corpus"] == "C").to_numpy(), "label"] = "c0"  # C: speaker 1, class c0 only
    path = write_store(tmp_path / "c.h5", items, {"toy": (pooled, LAYERS)})
    notes = []
    res = embedx.fit(path, output=None, domain="corpus", layers="3", models="logreg", bootstrap=0,
                     progress=False, log=notes.append)
    transfer = res.study.analyses["transfer"]
    table = transfer.table
    assert set(table["train_domain"]) == {"A", "B"} and "C" in set(table["test_domain"])
    assert any("domain 'C' has one class only ('c0')" in n for n in transfer.notes)
    assert any("label 'c1' occurs only in A, B" in n for n in notes)
    y, corpus = items["label"].to_numpy(), items["corpus"].to_numpy()
    X = pooled[LAYERS.index(3)]
    row = table[(table["train_domain"] == "A") & (table["test_domain"] == "C")].iloc[0]
    pred = _logreg().fit(X[corpus == "A"], y[corpus == "A"]).predict(X[corpus == "C"])
    assert row["score"] == pytest.approx(balanced_accuracy_score(y[corpus == "C"], pred))
