"""The analyses' one interface: a registered analysis runs in `embedx fit`, writes its files and its section."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pandas as pd
import pytest

import embedx
import embedx.api
from embedx.errors import ConfigError
from embedx.probing import analyses
from embedx.probing.analysis import Analysis
from embedx.probing.orchestrate import FitResult

from .conftest import LAYERS, planted, write_store


class PerClassHits(Analysis):
    """A stand-in for a future analysis: correct out-of-fold predictions per class of the best row."""

    name = "hits"
    figures = (("hits_plot", "Hits per class"),)

    def __init__(self) -> None:
        self.prepared_on = None

    def wanted(self, options):
        return options.get("label") == "label"  # only when the options ask for it (here: always in the test)

    def prepare(self, dataset, options, note):
        self.prepared_on = dataset.num_items
        note("hits: prepared")
        return dataset, {"classes": list(dataset.classes)}

    def run(self, study, state, *, progress=False, log=None):
        pred = study.predictions[study.best]
        y = study.dataset.y
        return pd.DataFrame({"class": state["classes"],
                             "hits": [int(np.sum((y == k) & (pred == k))) for k in range(len(state["classes"]))]})

    def write(self, value, out, files):
        value.to_csv(out / "hits.csv", index=False)
        files["hits"] = "hits.csv"
        (out / "hits.png").write_bytes(b"")  # a stand-in figure file
        files["hits_plot"] = "hits.png"

    def headline(self, value, study):
        return ["## Hits first", "", f"{int(value['hits'].sum())} hits", ""]

    def section(self, value, study, files):
        return ["## Hits", "", f"see `{files['hits']}`"]


@pytest.fixture
def registered():
    hits = analyses.register(PerClassHits())
    yield hits
    analyses.ANALYSES.pop("hits")


def test_a_registered_analysis_runs_writes_and_reports(tmp_path, registered):
    items, pooled = planted(num_items=60, num_speakers=6)
    store = write_store(tmp_path / "f.h5", items, {"toy": (pooled, LAYERS)})
    notes: list[str] = []
    res = embedx.fit(store, output=tmp_path / "out", layers="1,3", models="logreg", bootstrap=50,
                     save_model=False, progress=False, log=notes.append)
    assert registered.prepared_on == 60 and "hits: prepared" in notes
    table = res.study.analyses["hits"]
    # independent reference: the best row's out-of-fold predictions in predictions_best.csv
    best = pd.read_csv(tmp_path / "out" / "predictions_best.csv")
    expected = [int(((best["true"] == c) & (best["prediction"] == c)).sum()) for c in ("c0", "c1", "c2")]
    assert table["hits"].tolist() == expected
    assert pd.read_csv(res.files["hits"])["hits"].tolist() == expected
    report = res.files["report"].read_text()
    assert report.index("## Hits first") < report.index("## Data")  # a headline opens the report
    assert report.index("## Ranking") < report.index("## Hits\n") < report.index("## Figures")
    assert "![Hits per class](hits.png)" in report and "- `hits.csv`" in report
    assert json.loads(res.files["summary_json"].read_text())["files"]["hits"] == "hits.csv"


def test_registry_names_are_unique_and_unknown_names_are_listed():
    assert list(analyses.ANALYSES)[:7] == ["frames", "permutations", "weighted", "selectivity", "sets",
                                          "transfer", "subgroups"]
    with pytest.raises(ConfigError, match="already registered"):
        analyses.register(analyses.get("sets"))
    with pytest.raises(ConfigError, match=r"unknown analysis 'phones'; registered: frames, permutations"):
        analyses.get("phones")


def test_results_are_built_once_and_frozen(tmp_path):
    items, pooled = planted(num_items=60, num_speakers=6)
    _, other = planted(num_items=60, num_speakers=6, signal_layer=1, seed=1)
    store = write_store(tmp_path / "f.h5", items, {"a": (pooled, LAYERS), "b": (other, LAYERS)})
    res = embedx.fit(store, output=None, layers="3", models="logreg", bootstrap=0, permutations=4,
                     progress=False)
    study = res.study
    assert set(study.analyses) == {"permutations", "sets"}  # no weighted layers, no random twin
    assert study.analyses["permutations"] is study.chance and study.final is not None
    assert study.notes[0].startswith("Folds are grouped by the items' `speaker` column")
    assert study.notes[1].startswith("The chance control is undecided")  # 4 permutations: p >= 0.2
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.final = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.files = {}


def test_api_fit_hands_every_argument_to_the_orchestrator(monkeypatch):
    seen = {}

    def fake_run(options):
        seen.update(options)
        return "ran"

    monkeypatch.setattr("embedx.probing.orchestrate.run", fake_run)
    assert embedx.api.fit("x.h5", by=["sex"], permutations=3) == "ran"
    params = {n: p for n, p in inspect.signature(embedx.api.fit).parameters.items()
              if p.kind is not p.VAR_KEYWORD}  # **renamed: old spellings, resolved by api.fit
    assert list(seen) == list(params)
    assert seen["features"] == "x.h5" and seen["by"] == ["sex"] and seen["permutations"] == 3
    assert all(seen[n] == p.default for n, p in params.items() if n not in ("features", "by", "permutations"))
    assert embedx.api.FitResult is FitResult
