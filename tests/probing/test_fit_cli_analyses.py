"""`python -m embedx fit` with --domain, --label-map and --by, and their one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import embedx

from .conftest import LAYERS, planted, write_store


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(embedx.__file__).resolve().parent.parent), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "embedx", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _store(tmp_path: Path) -> Path:
    items, strong = planted(num_items=72, num_speakers=8)
    _, weak = planted(num_items=72, num_speakers=8, signal_layer=1, strength=0.3, seed=1)
    spk = items["speaker"].str[1:].astype(int).to_numpy()
    items["corpus"] = np.where(spk % 2 == 0, "emo-a", "emo-b")
    items["sex"] = np.where((spk // 2) % 2 == 0, "f", "m")
    items.loc[items["corpus"] == "emo-b", "label"] = items["label"].str.upper()  # C0, C1, C2
    items.loc[np.arange(len(items)) % 9 == 4, "label"] = "other"
    return write_store(tmp_path / "f.h5", items, {"strong": (strong, LAYERS), "weak": (weak, LAYERS)})


def test_cli_fit_with_domain_label_map_and_by(tmp_path):
    store = _store(tmp_path)
    (tmp_path / "map.yaml").write_text("c0: zero\nc1: one\nc2: two\nemo-b: {C0: zero, C1: one, C2: two}\n")
    res = _run("fit", "-f", str(store), "--layers", "1,3", "-m", "logreg", "--domain", "corpus",
               "--label-map", "map.yaml", "--by", "sex", "--bootstrap", "200", "--no-save-model", "-q",
               "-o", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "'other' in emo-a (4)" in res.stderr and "'other' in emo-b (4)" in res.stderr
    assert "feature sets at their best layer" in res.stdout
    assert res.stdout.index("feature sets") < res.stdout.index("pooled out of fold")
    assert "transfer (2 domains, best configuration)" in res.stdout and "sex: uar gap" in res.stdout
    out = tmp_path / "out"
    transfer = pd.read_csv(out / "transfer.csv")
    assert len(transfer) == 4 * 4 and set(transfer["train_domain"]) == {"emo-a", "emo-b"}
    assert len(pd.read_csv(out / "unmatched_labels.csv")) == 2
    assert set(pd.read_csv(out / "subgroups.csv")["subgroup"]) == {"f", "m"}
    assert list(pd.read_csv(out / "sets.csv")["feature_set"]) == ["strong", "weak"]
    assert len(pd.read_csv(out / "speakers.csv")) == 8
    assert sorted(p.name for p in out.glob("transfer_*.png")) == [
        "transfer_strong_mean_logreg.png", "transfer_weak_mean_logreg.png"]


def test_cli_fit_analysis_errors_are_one_line(tmp_path):
    store = _store(tmp_path)
    (tmp_path / "bad.yaml").write_text("c0: [zero\n")
    cases = [
        (["--domain", "site"], "--domain 'site': no such item column; available: "),
        (["--by", "gender"], "--by 'gender': no such item column; available: "),
        (["--domain", "corpus", "--label-map", "bad.yaml"], "--label-map 'bad.yaml' is not valid YAML"),
        (["--label-map", "bad.yaml"], "name the domain column with --domain"),
    ]
    for extra, message in cases:
        res = _run("fit", "-f", str(store), "-m", "logreg", "-q", "-o", "out", *extra, cwd=tmp_path)
        assert res.returncode != 0
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], res.stderr
        assert not (tmp_path / "out").exists()
