"""`embedx predict` output: a file in a terminal, plain CSV on a pipe, -o FILE as asked."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import embedx
from embedx.cli import app
from embedx.probing.data import load_dataset
from embedx.probing.modelfile import MODEL_FILE, save_model
from embedx.probing.study import StudySettings, run_study

from .conftest import LAYERS, planted, write_store


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A store whose ids are long relative paths (a table would cut them) and its saved model."""
    root = tmp_path_factory.mktemp("predict")
    items, pooled = planted()
    items["id"] = [f"spk{s}/spk{s}_session{i:03d}_{c}.wav"
                   for i, s, c in zip(range(len(items)), items["speaker"], items["label"], strict=True)]
    store = write_store(root / "toy.h5", items, {"toy": (pooled, LAYERS)})
    ds = load_dataset(store, label="label", layers="3")
    result = run_study(ds, StudySettings(models=["logreg"], n_boot=0, threads=1, n_splits=2))
    return store, save_model(result.final, root / MODEL_FILE), items


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(embedx.__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}


def test_piped_stdout_gets_plain_csv_with_full_ids_and_nothing_else(fitted, tmp_path):
    store, model, items = fitted
    proc = subprocess.run([sys.executable, "-m", "embedx", "predict", str(model), str(store)], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=300,  # stdout: a pipe
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(io.StringIO(proc.stdout))
    assert list(table.columns) == ["id", "path", "prediction", "prob_c0", "prob_c1", "prob_c2"]
    assert table["id"].tolist() == items["id"].tolist()  # whole, not cut to a column width
    assert proc.stdout.count("\n") == len(items) + 1  # a header, one line per item, no notes
    assert not (tmp_path / "predictions.csv").exists()


def test_in_a_terminal_predictions_go_to_predictions_csv(fitted, tmp_path):
    pty = pytest.importorskip("pty")
    store, model, items = fitted
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "embedx", "predict", str(model), str(store)], cwd=tmp_path,
                            env=_env(), stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    proc.stderr.close()
    text = re.sub(r"\x1b\[[0-9;]*m", "", shown.decode()).replace("\r\n", "\n")
    saved = pd.read_csv(tmp_path / "predictions.csv")
    assert saved["id"].tolist() == items["id"].tolist()
    counts = saved["prediction"].value_counts()
    lines = text.strip().splitlines()
    assert lines == [f"wrote {len(items)} predictions to predictions.csv (no -o given)",
                     "predicted classes: " + ", ".join(f"c{k} {counts.get(f'c{k}', 0)}" for k in range(3))]


def test_output_option_writes_the_file_it_names(fitted, tmp_path):
    store, model, items = fitted
    target = tmp_path / "sub" / "mine.csv"
    res = CliRunner().invoke(app, ["predict", str(model), str(store), "-o", str(target)])
    assert res.exit_code == 0, res.output
    saved = pd.read_csv(target)
    assert saved["id"].tolist() == items["id"].tolist()
    assert f"wrote {len(items)} predictions to {target}" in res.stdout
    assert "predicted classes: c0 " in res.stdout
    # without -o, and stdout not a terminal (CliRunner captures it): the same CSV on stdout
    res = CliRunner().invoke(app, ["predict", str(model), str(store)])
    assert res.exit_code == 0 and res.stdout == target.read_text()


def test_help_describes_the_default_output():
    res = CliRunner().invoke(app, ["predict", "--help"], terminal_width=200)
    text = " ".join(res.output.split())
    assert "predictions.csv in the current folder" in text
    assert "when stdout is not a terminal" in text and "--trust-pickle" in text
