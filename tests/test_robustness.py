"""Nothing lost: kill -9 and resume, every bad input recorded, a second writer refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from embedx.cli import app
from embedx.errors import StoreError
from embedx.extraction.config import ExtractConfig
from embedx.extraction.extract import extract
from embedx.probing.modelfile import MODEL_FILE
from embedx.store import StoreReader, StoreWriter
from embedx.testing.synth import chirp, noise, tone
from tests.killrun import write_corpus
from tests.storecheck import assert_same_features

_corpus = write_corpus  # the kill harness's corpus: speech-like items of 0.3-1.6 s


def _done_count(path):
    """Items done so far, read without taking HDF5's file lock (the writer holds the file)."""
    import h5py

    try:
        with h5py.File(path, "r", locking=False) as f:
            sets = list(f.get("features", {}))
            return int(f[f"features/{sets[0]}/done"][:].sum()) if sets else 0
    except (OSError, KeyError, ValueError):  # not created yet, or caught mid-write: ask again
        return -1


def test_kill_9_at_several_points_then_resume_equals_uninterrupted_run(tiny_model, tmp_path):
    num_items = 32
    wavs = _corpus(tmp_path / "wavs", num_items)
    model = str(tiny_model("hubert"))
    args = ["extract", "--model", model, str(wavs), "--pooling", "mean,std", "--frames",
            "--batch-seconds", "0.5", "--workers", "0", "--quiet"]
    # the uninterrupted reference runs as its own process too, like every run of a user: inside
    # pytest it would inherit whatever thread state earlier tests left in torch and OpenMP,
    # and a different thread count sums in a different order (1e-7 apart)
    full = tmp_path / "full.h5"
    res = subprocess.run([sys.executable, "-m", "embedx", *args, "-o", str(full)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr

    part = tmp_path / "part.h5"
    cmd = [sys.executable, "-m", "embedx", *args, "-o", str(part)]
    partial_kills = 0
    # kill -9 right after the file appears, then once a few items and once most items are done
    for target in (0, 4, 20):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if part.exists() and _done_count(part) >= target:
                break
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # whatever moment it died at, the file opens (or holds no item table yet) and is consistent
        try:
            with StoreReader(part) as r:
                sets = r.feature_sets()
                done = int(r.done(sets[0]).sum()) if sets else 0
                for i in np.flatnonzero(r.done(sets[0])) if sets else []:
                    assert np.isfinite(r.frames(sets[0], int(i))).all()
        except StoreError as exc:  # killed before the item table was complete
            assert "items" in str(exc) or "no such" in str(exc), exc
            done = 0
        partial_kills += 0 < done < num_items
    assert partial_kills >= 1, "no kill landed mid-run; the test did not test anything"
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert_same_features(full, part, same_sets=False)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "nothing to do" in res.stdout


def _bad_inputs(root):
    """Every kind of input a real corpus throws at the extractor, and whether it should work."""
    rng = np.random.default_rng(7)
    expect = {}

    def write(rel, data, rate, subtype=None, ok=True):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data, rate, subtype=subtype)
        expect[rel] = ok

    for bits in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        write(f"enc/{bits}.wav", tone(300, 0.4, 16000), 16000, bits)
    for ch in (1, 2, 3, 6, 8):
        write(f"ch/{ch}.wav", np.tile(chirp(100, 900, 0.4, 16000)[:, None], (1, ch)), 16000)
    for rate in (8000, 11025, 22050, 32000, 44100, 48000, 96000):
        write(f"rate/{rate}.flac", tone(200, 0.4, rate), rate, "PCM_24")
    write("silence.wav", np.zeros(16000, dtype=np.float32), 16000)
    write("very short 10ms.wav", tone(300, 0.01, 16000), 16000)  # padded to 25 ms (--short pad)
    write("spaces and ümlauts/ça marche.wav", noise(0.5, 16000), 16000)
    write("nan.wav", np.array([0.1, np.nan] * 4000, dtype=np.float32), 16000, "FLOAT", ok=False)
    write("inf.wav", np.array([0.1, np.inf] * 4000, dtype=np.float32), 16000, "FLOAT", ok=False)
    (root / "empty.wav").write_bytes(b"")
    expect["empty.wav"] = False
    (root / "text.wav").write_text("hello, I am not audio")
    expect["text.wav"] = False
    full = root / "silence.wav"
    (root / "truncated.wav").write_bytes(full.read_bytes()[:1001])  # header promises more
    expect["truncated.wav"] = True  # libsndfile reads the samples that are there
    (root / "header_only.wav").write_bytes(full.read_bytes()[:44])
    expect["header_only.wav"] = False
    flac = (root / "rate" / "8000.flac").read_bytes()
    (root / "cut.flac").write_bytes(flac[: len(flac) // 2])
    expect["cut.flac"] = False
    (root / "broken_link.wav").symlink_to(root / "nowhere.wav")
    expect["broken_link.wav"] = False
    (root / "folder.wav").mkdir()  # a directory with an audio name is not scanned as a file
    # property-style: random garbage behind a valid-looking RIFF header, random cuts of good files
    for k in range(8):
        junk = b"RIFF" + rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes()
        (root / f"junk{k}.wav").write_bytes(junk)
        expect[f"junk{k}.wav"] = None  # either outcome is fine, as long as it is clean
    return expect


def test_bad_inputs_are_processed_or_recorded_with_one_line_reasons(tiny_model, tmp_path):
    root = tmp_path / "bad"
    expect = _bad_inputs(root)
    out = tmp_path / "f.h5"
    res = CliRunner().invoke(app, ["extract", "--model", str(tiny_model("hubert")), str(root), "-o", str(out),
                                   "--workers", "1", "--quiet", "--strict"])
    assert res.exit_code == 1  # --strict: failures make the exit code non-zero
    with StoreReader(out) as r:
        name = r.feature_sets()[0]
        ids = r.items["id"].tolist()
        done = dict(zip(ids, r.done(name), strict=True))
        failed = r.failed(name).set_index("id")
        assert sorted(ids) == sorted(expect)
        for rel, ok in expect.items():
            assert done[rel] != (rel in failed.index), rel  # exactly one of done / failed
            if ok is not None:
                assert done[rel] == ok, (rel, failed["message"].get(rel))
            if rel in failed.index:
                msg = failed.loc[rel, "message"]
                assert msg and "\n" not in msg and len(msg) < 600
        assert np.isfinite(r.pooled(name, "mean", 0)[r.done(name)]).all()
    n_failed = int((~pd.Series(done)).sum())
    assert f"{n_failed} failed" in res.output


def test_manifest_row_pointing_nowhere_is_recorded(tiny_model, tmp_path):
    wavs = _corpus(tmp_path / "wavs", 3)
    pd.DataFrame({"path": ["u000.wav", "gone.wav", "u002.wav"], "label": ["a", "b", "a"]}).to_csv(
        tmp_path / "m.csv", index=False)
    config = ExtractConfig(model=str(tiny_model("hubert")), manifest=str(tmp_path / "m.csv"), workers=0,
                           progress=False)
    summary = extract([str(wavs)], tmp_path / "f.h5", config)
    assert (summary.processed, summary.failed) == (2, 1)
    with StoreReader(tmp_path / "f.h5") as r:
        row = r.failed().iloc[0]
        assert row["id"] == "gone.wav" and row["stage"] == "probe" and "no such file" in row["message"]
        # the item keeps its place: ids of every feature set line up with the manifest
        assert r.items["id"].tolist() == ["u000.wav", "gone.wav", "u002.wav"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_recorded(tiny_model, tmp_path):
    wavs = _corpus(tmp_path / "wavs", 2)
    (wavs / "u001.wav").chmod(0)
    summary = extract([str(wavs)], tmp_path / "f.h5",
                      ExtractConfig(model=str(tiny_model("hubert")), workers=0, progress=False))
    assert summary.failed == 1


def test_second_writer_gets_a_clear_error(tiny_model, tmp_path):
    wavs = _corpus(tmp_path / "wavs", 2)
    out = tmp_path / "f.h5"
    with StoreWriter(out):  # another process (or this one) is writing the file
        res = CliRunner().invoke(app, ["extract", "--model", str(tiny_model("hubert")), str(wavs), "-o",
                                       str(out), "--quiet"])
    assert res.exit_code != 0
    assert "another embedx process" in res.output and len(res.output.strip().splitlines()) == 1
    # and the file is intact: the next run works
    res = CliRunner().invoke(app, ["extract", "--model", str(tiny_model("hubert")), str(wavs), "-o", str(out),
                                   "--quiet", "--workers", "0"])
    assert res.exit_code == 0, res.output


@pytest.fixture
def labelled_store(tiny_model, tmp_path):
    wavs = _corpus(tmp_path / "wavs", 16)
    rows = [{"path": f"u{i:03d}.wav", "label": ["hap", "sad"][i % 2], "speaker": f"s{i % 4}",
             "arousal": 0.1 * i} for i in range(16)]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "feats.h5"
    extract([str(wavs)], out, ExtractConfig(model=str(tiny_model("hubert")), manifest=str(tmp_path / "m.csv"),
                                            layers="0,4", workers=0, progress=False))
    return out


def _fit(*args):
    return CliRunner().invoke(app, ["fit", *args, "--quiet", "--bootstrap", "0", "--no-save-model"])


def _one_line_error(res, *needles):
    assert res.exit_code not in (0, None), res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    for needle in needles:
        assert needle in res.output, res.output


def test_stage2_on_a_truncated_store_is_one_line(labelled_store, tmp_path):
    cut = tmp_path / "cut.h5"
    data = labelled_store.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    _one_line_error(_fit("-f", str(cut), "-o", str(tmp_path / "r")), "cut.h5")
    # a real model, saved by fitting the intact store: predict gets past the model and fails on
    # the store, and the same model predicts every item of the intact store
    fitted = CliRunner().invoke(app, ["fit", "-f", str(labelled_store), "-o", str(tmp_path / "m"), "--quiet",
                                      "--bootstrap", "0", "--cv", "2", "--models", "logreg", "--layers", "4"])
    assert fitted.exit_code == 0, fitted.output
    model = tmp_path / "m" / MODEL_FILE
    ok = CliRunner().invoke(app, ["predict", str(model), str(labelled_store), "-o", str(tmp_path / "p.csv")])
    assert ok.exit_code == 0, ok.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == 16
    res = CliRunner().invoke(app, ["predict", str(model), str(cut), "-o", str(tmp_path / "q.csv")])
    _one_line_error(res, "cut.h5 cannot be opened as HDF5")
    assert not (tmp_path / "q.csv").exists()


def test_stage2_on_a_newer_schema_is_one_line(labelled_store, tmp_path):
    import shutil

    import h5py

    newer = tmp_path / "newer.h5"
    shutil.copy(labelled_store, newer)
    with h5py.File(newer, "a") as f:
        f.attrs["schema_version"] = 99
    _one_line_error(_fit("-f", str(newer), "-o", str(tmp_path / "r")), "99")


def test_labels_file_with_missing_ids_and_wrong_types(labelled_store, tmp_path):
    # half the ids are missing: those items are skipped, and the run says so
    pd.DataFrame({"id": [f"u{i:03d}.wav" for i in range(0, 16, 2)] + [f"u{i:03d}.wav" for i in range(1, 8, 2)],
                  "emotion": ["hap"] * 8 + ["sad"] * 4}).to_csv(tmp_path / "l.csv", index=False)
    res = _fit("-f", str(labelled_store), "--labels", str(tmp_path / "l.csv"), "-y", "emotion",
               "--cv", "3", "--no-group", "-o", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    assert "4 no label" in res.output.replace("\n", " ")
    # no id matches at all
    pd.DataFrame({"id": ["x.wav", "y.wav"], "emotion": ["a", "b"]}).to_csv(tmp_path / "none.csv", index=False)
    _one_line_error(_fit("-f", str(labelled_store), "--labels", str(tmp_path / "none.csv"), "-y", "emotion",
                         "-o", str(tmp_path / "r2")), "no item of the store matches")
    # strings where a regression needs numbers
    pd.DataFrame({"id": [f"u{i:03d}.wav" for i in range(16)],
                  "arousal": ["high", "low"] * 8}).to_csv(tmp_path / "t.csv", index=False)
    _one_line_error(_fit("-f", str(labelled_store), "--labels", str(tmp_path / "t.csv"), "-y", "arousal",
                         "--task", "regression", "-o", str(tmp_path / "r2")), "not numeric", "'high'")
    _one_line_error(_fit("-f", str(labelled_store), "-y", "valence", "-o", str(tmp_path / "r2")),
                    "no label column 'valence' among the items' columns")
