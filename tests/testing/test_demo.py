"""`make demo`'s promise: the built-in example's layer curve has a shape (a best layer, and
layers significantly worse than it), run through the real command line as the Makefile does."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.clirun import run_embedx

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


_cli = run_embedx


def test_the_makefile_runs_the_commands_this_test_runs():
    demo = MAKEFILE.read_text()
    assert "embedx synth $(DEMO)\n" in demo
    assert "embedx extract --model tiny-hubert wavs/ --pooling mean,std --frames\n" in demo
    assert "embedx fit --features feats.h5 --models logreg,svm\n" in demo


def test_demo_layer_curve_has_a_best_layer_and_significantly_worse_ones(tmp_path):
    made = _cli("synth", "demo", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "demo"
    extracted = _cli("extract", "--model", "tiny-hubert", "wavs/", "--pooling", "mean,std", "--frames",
                     cwd=folder)
    assert extracted.returncode == 0, extracted.stderr
    fitted = _cli("fit", "--features", "feats.h5", "--models", "logreg,svm", cwd=folder)
    assert fitted.returncode == 0, fitted.stderr

    summary = pd.read_csv(folder / "results" / "summary.csv")
    items = pd.read_csv(folder / "wavs" / "labels.csv")
    assert len(items) == 128 and items["speaker"].nunique() == 16
    assert len(summary) == 10  # layers 0..4 x logreg, svm; default mean pooling
    best = summary.loc[summary["rank"] == 1].iloc[0]
    # the narrowing blocks leave the most in layer 0 (see embedx.testing.synth)
    assert best["layer"] == 0 and best["uar_pooled"] > 0.5
    same_model = summary[summary["model"] == best["model"]].set_index("layer")
    worse = same_model[same_model["worse_than_best"].astype(bool)]
    assert len(worse) >= 1
    # the best layer's CI excludes the worse layers' scores; the deepest is near chance (0.25)
    assert (worse["uar_pooled"] < best["ci_low"]).all()
    assert bool(same_model.loc[4, "worse_than_best"]) and same_model.loc[4, "uar_pooled"] < 0.35
    # the curve falls with depth for both probes (layer 0 above every deeper layer)
    for _, curve in summary.groupby("model"):
        curve = curve.set_index("layer")["uar_pooled"]
        assert curve.loc[0] > curve.loc[[1, 2, 3, 4]].max()
