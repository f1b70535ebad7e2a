"""Tests of the HDF5 store (embedx.store): schema v1 round trips, resume, locking, failures."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from embedx.errors import StoreError
from embedx.store import SCHEMA_VERSION, FeatureSetSpec, StoreReader, StoreWriter

REPO = Path(__file__).resolve().parents[1]
N = 11  # items
LAYERS = (0, 3, 7)
DIM = 6


def make_items(n: int = N) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"spk{i % 3}/utt{i:02d}.wav" for i in range(n)],
            "path": [f"/data/spk{i % 3}/utt{i:02d}.wav" for i in range(n)],
            "duration": [1.5 + i if i != 4 else np.nan for i in range(n)],
            "sample_rate": [16000] * n,
            "num_samples": [int((1.5 + i) * 16000) for i in range(n)],
            "label": [["ärger", "freude", None, "中性"][i % 4] for i in range(n)],
            "speaker": [f"spk{i % 3}" for i in range(n)],
            "age": [20 + i for i in range(n)],
            "valence": [0.25 * i if i % 5 else np.nan for i in range(n)],
            "train": [i % 2 == 0 for i in range(n)],
        }
    )


def make_spec(**changes) -> FeatureSetSpec:
    kwargs = dict(
        name="tiny-model",
        backend="hf",
        layers=LAYERS,
        dim=DIM,
        poolings=("mean", "std"),
        frames=False,
        dtype="float32",
        frame_rate=49.9,
        heads={"adv": ("arousal", "dominance", "valence")},
        attrs={"model_id": "org/tiny", "revision": "abc123", "torch": "2.11"},
        config={"layers": [0, 3, 7], "precision": "fp32", "short_items": "pad"},
    )
    kwargs.update(changes)
    return FeatureSetSpec(**kwargs)


def random_batch(rng, batch: int, num_layers: int = len(LAYERS), dim: int = DIM):
    return rng.standard_normal((num_layers, batch, dim)).astype(np.float32)


def fill_set(writer: StoreWriter, spec: FeatureSetSpec, rng, order, batch: int = 3):
    """Write items in ``order`` in batches; return the written arrays in item order."""
    n = writer.num_items
    pooled = {
        p: np.full((len(spec.layers), n, spec.dim), np.nan, np.float32) for p in spec.poolings
    }
    heads = {h: np.full((n, len(k)), np.nan, np.float32) for h, k in spec.heads.items()}
    for start in range(0, len(order), batch):
        idx = np.asarray(order[start : start + batch])
        pb = {p: random_batch(rng, len(idx), len(spec.layers), spec.dim) for p in spec.poolings}
        hb = {
            h: rng.standard_normal((len(idx), len(k))).astype(np.float32)
            for h, k in spec.heads.items()
        }
        writer.write(spec.name, idx, pooled=pb, heads=hb)
        for p in pb:
            pooled[p][:, idx, :] = pb[p]
        for h in hb:
            heads[h][idx] = hb[h]
    return pooled, heads


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "features.h5"


# ------------------------------------------------------------------------------------- items


def test_items_round_trip(store):
    items = make_items()
    with StoreWriter(store, command="embedx extract data/ -o features.h5") as w:
        w.write_items(items)
        assert w.num_items == N
    with StoreReader(store) as r:
        got = r.items
        assert r.num_items == N
        assert r.attrs["schema_version"] == SCHEMA_VERSION
        assert r.attrs["command"] == "embedx extract data/ -o features.h5"
        assert r.attrs["embedx_version"]
        assert r.attrs["created"]
    assert list(got.columns) == list(items.columns)
    assert got["id"].tolist() == items["id"].tolist()
    assert got["path"].tolist() == items["path"].tolist()
    np.testing.assert_array_equal(got["duration"].to_numpy(), items["duration"].to_numpy())
    assert np.isnan(got["duration"][4])
    assert got["sample_rate"].dtype == np.int64 and got["age"].dtype == np.int64
    assert got["age"].tolist() == items["age"].tolist()
    assert got["valence"].dtype == np.float64
    np.testing.assert_array_equal(got["valence"].to_numpy(), items["valence"].to_numpy())
    assert got["train"].dtype == bool and got["train"].tolist() == items["train"].tolist()
    # strings (non-ASCII kept), missing read back as missing
    assert got["label"][0] == "ärger" and got["label"][3] == "中性"
    assert got["label"].isna().tolist() == items["label"].isna().tolist()
    assert got["speaker"].tolist() == items["speaker"].tolist()


def test_items_defaults_and_nullable_columns(store):
    items = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "path": ["a.wav", "b.wav", "c.wav"],
            "fold": pd.array([1, None, 3], dtype="Int64"),
            "mixed": [1, "x", None],
        }
    )
    with StoreWriter(store) as w:
        w.write_items(items)
    with StoreReader(store) as r:
        got = r.items
    assert list(got.columns) == [
        "id",
        "path",
        "duration",
        "sample_rate",
        "num_samples",
        "fold",
        "mixed",
    ]
    assert got["duration"].isna().all()
    assert got["sample_rate"].tolist() == [0, 0, 0] and got["num_samples"].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(got["fold"].to_numpy(), [1.0, np.nan, 3.0])
    assert got["mixed"][0] == "1" and got["mixed"][1] == "x" and pd.isna(got["mixed"][2])


@pytest.mark.parametrize(
    ("items", "match"),
    [
        (pd.DataFrame({"id": [], "path": []}), "no items"),
        (pd.DataFrame({"path": ["a"]}), "no 'id' column"),
        (
            pd.DataFrame({"id": ["a", "b", "a"], "path": ["x", "y", "z"]}),
            "1 duplicate item ids, first 'a'",
        ),
        (pd.DataFrame({"id": ["a", ""], "path": ["x", "y"]}), "non-empty strings"),
        (pd.DataFrame({"id": ["a"], "path": ["x"], "a/b": [1]}), "invalid item column name 'a/b'"),
        (
            pd.DataFrame({"id": ["a"], "path": ["x"], "duration": ["long"]}),
            "'duration' must be numeric",
        ),
    ],
)
def test_write_items_rejects_bad_items(store, items, match):
    with StoreWriter(store) as w, pytest.raises(StoreError, match=match):
        w.write_items(items)


def test_items_mismatch_and_new_columns(store):
    items = make_items()
    with StoreWriter(store) as w:
        w.write_items(items)
    with StoreWriter(store) as w:
        with pytest.raises(StoreError, match=rf"holds {N} items but {N - 1} were requested"):
            w.write_items(items.iloc[:-1])
        changed = items.copy()
        changed.loc[[2, 5, 8], "id"] = ["x/a.wav", "x/b.wav", "x/c.wav"]
        with pytest.raises(StoreError) as info:
            w.write_items(changed)
        message = str(info.value)
        assert "3 items differ" in message
        assert "'spk2/utt02.wav' in file, 'x/a.wav' requested" in message
        with pytest.raises(StoreError, match="same ids in another order"):
            w.write_items(items.iloc[::-1])
        # same ids: new columns are added, stored ones left as they are
        more = items.assign(gender=["f", "m"] * (N // 2) + ["f"], age=0)
        w.write_items(more)
    with StoreReader(store) as r:
        got = r.items
    assert list(got.columns) == [*items.columns, "gender"]
    assert got["gender"].tolist() == more["gender"].tolist()
    assert got["age"].tolist() == items["age"].tolist()


# -------------------------------------------------------------------------------- round trip


def test_pooled_heads_done_round_trip_scrambled(store):
    rng = np.random.default_rng(0)
    spec = make_spec()
    order = [7, 2, 9, 0, 4, 10, 1, 5]  # scrambled, items 3, 6 and 8 never written
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(spec)
        assert not w.done(spec.name).any()
        pooled, heads = fill_set(w, spec, rng, order)
    with StoreReader(store) as r:
        assert r.feature_sets() == [spec.name]
        done = r.done(spec.name)
        assert done.dtype == bool and done.shape == (N,)
        assert sorted(np.flatnonzero(done).tolist()) == sorted(order)
        for p in spec.poolings:
            for axis, layer in enumerate(spec.layers):
                got = r.pooled(spec.name, p, layer)
                assert got.shape == (N, DIM) and got.dtype == np.float32
                np.testing.assert_array_equal(got[done], pooled[p][axis][done])
                assert np.isnan(got[~done]).all()  # never-written rows are NaN
        values, names = r.heads(spec.name, "adv")
        assert names == ["arousal", "dominance", "valence"]
        np.testing.assert_array_equal(values[done], heads["adv"][done])
        back = r.spec(spec.name)
    assert back == spec


def test_float16_storage_within_rounding(store):
    rng = np.random.default_rng(1)
    spec = make_spec(dtype="float16", heads={})
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(spec)
        pooled, _ = fill_set(w, spec, rng, rng.permutation(N), batch=4)
    with StoreReader(store) as r:
        assert r.spec(spec.name).dtype == "float16"
        got = r.pooled(spec.name, "std", 7)
    assert got.dtype == np.float32
    want = pooled["std"][2]
    np.testing.assert_allclose(got, want, rtol=2**-10, atol=2**-14)
    np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))


def test_frames_offsets_and_items(store):
    rng = np.random.default_rng(2)
    spec = make_spec(poolings=("mean",), frames=True, heads={})
    counts = np.array([5, 0, 3, 64, 65, 1, 7, 2, 130, 4, 9])
    frames = [rng.standard_normal((c, len(LAYERS), DIM)).astype(np.float32) for c in counts]
    with StoreWriter(store) as w:
        w.write_items(make_items())
        with pytest.raises(StoreError, match="num_frames"):
            w.create_feature_set(spec)
        w.create_feature_set(spec, num_frames=counts)
        for idx in ([8, 1, 3], [0, 2], [10, 4, 5, 6], [9, 7]):  # scrambled and contiguous runs
            w.write(
                spec.name,
                np.array(idx),
                pooled={"mean": random_batch(rng, len(idx))},
                frames=[frames[i] for i in idx],
            )
        with pytest.raises(
            StoreError, match=r"frames of item 'spk0/utt00.wav' \(index 0\) have shape"
        ):
            w.write(spec.name, [0], pooled={"mean": random_batch(rng, 1)}, frames=[frames[1]])
        with pytest.raises(StoreError, match="stores frames; write got none"):
            w.write(spec.name, [0], pooled={"mean": random_batch(rng, 1)})
    with StoreReader(store) as r:
        offsets = r.frame_offsets(spec.name)
        assert offsets.dtype == np.int64
        np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(counts)]))
        assert r.done(spec.name).all()
        for i, want in enumerate(frames):
            got = r.frames(spec.name, i)
            assert got.shape == (counts[i], len(LAYERS), DIM)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(r.frames(spec.name, i, layer=3), want[:, 1, :])
        with pytest.raises(StoreError, match="has no layer 4; stored layers: 0, 3, 7"):
            r.frames(spec.name, 0, layer=4)
        assert r.summary()["feature_sets"][spec.name]["total_frames"] == counts.sum()


def test_frames_only_set_in_float16(store):
    rng = np.random.default_rng(10)
    spec = make_spec(layers=(12,), poolings=(), frames=True, dtype="float16", heads={})
    counts = np.arange(N) % 4
    frames = [rng.standard_normal((c, 1, DIM)).astype(np.float32) for c in counts]
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(spec, num_frames=counts)
        w.write(spec.name, np.arange(N)[::-1], frames=frames[::-1])
    with StoreReader(store) as r:
        assert r.spec(spec.name) == spec
        assert r.done(spec.name).all()
        for i in range(N):
            got = r.frames(spec.name, i, layer=12)
            assert got.shape == (counts[i], DIM) and got.dtype == np.float32
            np.testing.assert_allclose(got, frames[i][:, 0], rtol=2**-10, atol=2**-14)


def test_reader_names_what_is_available(store):
    spec = make_spec()
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(spec)
    with StoreReader(store) as r:
        with pytest.raises(StoreError, match="no feature set 'other'; available: tiny-model"):
            r.spec("other")
        with pytest.raises(StoreError, match="no pooling 'max'; stored: mean, std"):
            r.pooled(spec.name, "max", 0)
        with pytest.raises(StoreError, match="no layer 1; stored layers: 0, 3, 7"):
            r.pooled(spec.name, "mean", 1)
        with pytest.raises(StoreError, match="no head 'logits'; stored: adv"):
            r.heads(spec.name, "logits")
        with pytest.raises(StoreError, match="has no frames"):
            r.frames(spec.name, 0)


def test_write_validates_batches(store):
    rng = np.random.default_rng(3)
    spec = make_spec(heads={})
    ok = {"mean": random_batch(rng, 2), "std": random_batch(rng, 2)}
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(spec)
        with pytest.raises(
            StoreError, match=r"stores poolings \['mean', 'std'\]; write got \['mean'\]"
        ):
            w.write(spec.name, [0, 1], pooled={"mean": ok["mean"]})
        with pytest.raises(StoreError, match=r"expected \(num_layers, batch, dim\) = \(3, 2, 6\)"):
            w.write(spec.name, [0, 1], pooled={**ok, "std": random_batch(rng, 2, dim=5)})
        with pytest.raises(StoreError, match=r"must be in 0\.\.10, got 1\.\.11"):
            w.write(spec.name, [11, 1], pooled=ok)
        with pytest.raises(StoreError, match="unique"):
            w.write(spec.name, [1, 1], pooled=ok)
        with pytest.raises(StoreError, match="no feature set 'nope'"):
            w.write("nope", [0, 1], pooled=ok)
        assert not w.done(spec.name).any()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"layers": (3, 0)}, r"layers \(3, 0\) must be non-negative and strictly increasing"),
        (
            {"dtype": "bfloat16"},
            "storage dtype 'bfloat16' is not supported; accepted: float32, float16",
        ),
        ({"name": "a/b"}, "invalid feature-set name 'a/b'"),
        ({"poolings": (), "frames": False}, "nothing to store"),
        ({"feature_names": ("a", "b")}, "2 feature_names for dim 6"),
        ({"attrs": {"dim": 3}}, "attr name 'dim' is empty or reserved"),
        ({"attrs": {"versions": [1, 2]}}, "attr 'versions' has a list value"),
    ],
)
def test_create_feature_set_validates_spec(store, changes, match):
    with StoreWriter(store) as w:
        w.write_items(make_items())
        with pytest.raises(StoreError, match=match):
            w.create_feature_set(make_spec(**changes))


def test_create_feature_set_needs_items(store):
    with StoreWriter(store) as w, pytest.raises(StoreError, match="call write_items"):
        w.create_feature_set(make_spec())


# ------------------------------------------------------------------------- resume / overwrite


def test_resume_is_a_no_op_and_keeps_done(store):
    rng = np.random.default_rng(4)
    spec = make_spec()
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(spec)
        pooled, _ = fill_set(w, spec, rng, [5, 1, 9])
    # same spec built from lists, other attrs (versions, revision): still the same data
    again = make_spec(
        layers=[0, 3, 7],
        poolings=["std", "mean"],
        attrs={"model_id": "org/tiny", "torch": "2.12"},
        config={"precision": "fp32", "layers": (0, 3, 7), "short_items": "pad"},
    )
    assert make_spec().differences(again) == []
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(again)
        assert np.flatnonzero(w.done(spec.name)).tolist() == [1, 5, 9]
        fill_set(w, spec, rng, [0, 2])
    with StoreReader(store) as r:
        assert np.flatnonzero(r.done(spec.name)).tolist() == [0, 1, 2, 5, 9]
        np.testing.assert_array_equal(r.pooled(spec.name, "mean", 7)[9], pooled["mean"][2][9])
        assert r.spec(spec.name).attrs["torch"] == "2.11"  # the set keeps its creation attrs


def test_resume_with_other_settings_is_refused(store):
    spec = make_spec()
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(spec)
        other = make_spec(layers=(0, 7), config={**spec.config, "precision": "fp16"})
        with pytest.raises(StoreError) as info:
            w.create_feature_set(other)
    message = str(info.value)
    assert "layers: stored (0, 3, 7) vs requested (0, 7)" in message
    assert "config.precision: stored fp32 vs requested fp16" in message
    assert "Use overwrite=True to replace it" in message and "--overwrite" not in message


def test_resume_with_other_frame_counts_is_refused(store):
    spec = make_spec(frames=True, heads={})
    counts = np.arange(1, N + 1)
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(spec, num_frames=counts)
        w.create_feature_set(spec, num_frames=counts)  # same: resume
        changed = counts.copy()
        changed[4] = 99
        with pytest.raises(StoreError, match="1 items have another frame count than stored"):
            w.create_feature_set(spec, num_frames=changed)


def test_overwrite_replaces_the_set_and_its_failures(store):
    rng = np.random.default_rng(5)
    spec = make_spec()
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(spec)
        fill_set(w, spec, rng, [0, 1, 2])
        w.record_failure(spec.name, 4, "decode", "cannot decode")
        new = make_spec(layers=(7,), poolings=("mean",), heads={})
        w.create_feature_set(new, overwrite=True)
        assert not w.done(spec.name).any()
        assert w.failed(spec.name).empty
        assert w.spec(spec.name) == new
        fill_set(w, new, rng, [3])
    with StoreReader(store) as r:
        assert r.pooled(spec.name, "mean", 7).shape == (N, DIM)
        assert np.flatnonzero(r.done(spec.name)).tolist() == [3]


def test_two_feature_sets_in_one_file(store):
    rng = np.random.default_rng(6)
    names = tuple(f"f{i}" for i in range(4))
    hf = make_spec()
    smile = make_spec(
        name="egemaps",
        backend="opensmile",
        layers=(0,),
        dim=4,
        poolings=("functionals",),
        frame_rate=None,
        heads={},
        feature_names=names,
        attrs={"feature_set": "eGeMAPSv02"},
        config={"feature_set": "eGeMAPSv02"},
    )
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(hf)
        w.create_feature_set(smile)
        fill_set(w, hf, rng, range(N))
        pooled, _ = fill_set(w, smile, rng, range(0, N, 2), batch=N)
    with StoreReader(store) as r:
        assert r.feature_sets() == ["egemaps", "tiny-model"]
        assert r.done("tiny-model").all()
        assert r.done("egemaps").sum() == (N + 1) // 2
        back = r.spec("egemaps")
        assert back.feature_names == names and back.frame_rate is None and back == smile
        got = r.pooled("egemaps", "functionals", 0)
        assert got.shape == (N, 4)
        np.testing.assert_array_equal(got[::2], pooled["functionals"][0][::2])


def test_large_config_is_stored(store):
    spec = make_spec(config={"files": [f"/data/{i:05d}.wav" for i in range(3000)]})
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(spec)
    with StoreReader(store) as r:
        assert r.spec(spec.name).config == spec.config


# ------------------------------------------------------------------------------------ errors


def test_second_writer_is_locked_out(store):
    w = StoreWriter(store)
    try:
        with pytest.raises(StoreError, match=r"is being written by another embedx process \(lock "):
            StoreWriter(store)
    finally:
        w.close()
    StoreWriter(store).close()  # the lock is released on close


def test_reader_in_another_process_while_writing(store):
    code = textwrap.dedent(
        f"""
        import sys
        from embedx.errors import StoreError
        from embedx.store import StoreReader
        try:
            StoreReader({str(store)!r})
        except StoreError as e:
            print("StoreError:", e)
        """
    )
    with StoreWriter(store) as w:
        w.write_items(make_items())
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
        ).stdout
    assert "is open for writing by another process" in out
    with StoreReader(store) as r:  # fine once the writer is gone
        assert r.num_items == N


def test_store_survives_a_killed_writer(store):
    code = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from embedx.store import StoreWriter
        import tests.test_store as t
        w = StoreWriter({str(store)!r})
        w.write_items(t.make_items())
        spec = t.make_spec(heads={{}})
        w.create_feature_set(spec)
        for idx in ([3, 1], [8, 6]):
            x = np.full((3, 2, 6), float(idx[0]), np.float32)
            w.write(spec.name, np.array(idx), pooled={{"mean": x, "std": x}})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True)
    assert result.returncode == -9
    with StoreReader(store) as r:
        done = r.done("tiny-model")
        assert np.flatnonzero(done).tolist() == [1, 3, 6, 8]
        np.testing.assert_array_equal(
            r.pooled("tiny-model", "std", 3)[[1, 3, 6, 8], 0], [3, 3, 8, 8]
        )
    with StoreWriter(store) as w:  # the kernel released the lock; resume works
        w.create_feature_set(make_spec(heads={}))


def test_newer_schema_is_refused(store):
    with StoreWriter(store) as w:
        w.write_items(make_items())
    with h5py.File(store, "r+") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    for opener in (StoreReader, StoreWriter):
        with pytest.raises(
            StoreError, match=f"schema version {SCHEMA_VERSION + 1}.*reads version {SCHEMA_VERSION}"
        ):
            opener(store)


def test_not_an_embedx_store(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("hello\n")
    for opener in (StoreReader, StoreWriter):
        with pytest.raises(StoreError, match="is not an HDF5 file"):
            opener(text)
    with pytest.raises(StoreError, match="no such store file"):
        StoreReader(tmp_path / "missing.h5")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(StoreError, match="not an embedx store"):
        StoreReader(plain)
    empty = tmp_path / "empty.h5"
    StoreWriter(empty).close()
    with pytest.raises(StoreError, match="holds no items"):
        StoreReader(empty)


def test_truncated_file(store):
    rng = np.random.default_rng(7)
    spec = make_spec()
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(spec)
        fill_set(w, spec, rng, range(N))
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreError, match="cannot be opened as HDF5") as info:
        StoreReader(store)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------- failures


def test_failures_recorded_replaced_and_cleared(store):
    rng = np.random.default_rng(8)
    spec = make_spec()
    with StoreWriter(store) as w:
        w.write_items(make_items())
        w.create_feature_set(spec)
        assert w.failed().empty
        assert list(w.failed().columns) == ["set", "index", "id", "path", "stage", "message"]
        w.record_failure(spec.name, 2, "decode", "cannot decode: ünknown format")
        w.record_failure(spec.name, 5, "forward", "too short")
        w.record_failure("egemaps", 2, "decode", "cannot decode")
        w.record_failure(spec.name, 5, "forward", "too short: 120 samples")  # replaces
        with pytest.raises(StoreError, match="not an item index"):
            w.record_failure(spec.name, N, "decode", "x")
    with StoreReader(store) as r:
        df = r.failed()
        assert len(df) == 3
        mine = r.failed(spec.name)
        assert mine["index"].tolist() == [2, 5]
        assert mine["id"].tolist() == ["spk2/utt02.wav", "spk2/utt05.wav"]
        assert mine["path"][0] == "/data/spk2/utt02.wav"
        assert mine["message"].tolist() == [
            "cannot decode: ünknown format",
            "too short: 120 samples",
        ]
        assert r.summary()["feature_sets"][spec.name]["failed"] == 2
    with StoreWriter(store) as w:
        fill_set(w, spec, rng, [5])  # a successful retry drops the item's failure
        assert w.failed(spec.name)["index"].tolist() == [2]
        w.clear_failures(spec.name, [7])  # nothing to clear
        assert len(w.failed()) == 2
        w.clear_failures(spec.name)
        assert w.failed()["set"].tolist() == ["egemaps"]


# ----------------------------------------------------------------------------------- summary


def test_summary(store):
    rng = np.random.default_rng(9)
    spec = make_spec(frames=True)
    with StoreWriter(store, command="embedx extract wavs/") as w:
        w.write_items(make_items())
        w.create_feature_set(spec, num_frames=np.full(N, 2))
        for i in (0, 4):
            w.write(
                spec.name,
                [i],
                pooled={"mean": random_batch(rng, 1), "std": random_batch(rng, 1)},
                frames=[rng.standard_normal((2, 3, DIM))],
                heads={"adv": rng.standard_normal((1, 3))},
            )
        w.record_failure(spec.name, 7, "decode", "bad header")
    with StoreReader(store) as r:
        s = r.summary()
    assert s["path"] == str(store)
    assert s["size_bytes"] == store.stat().st_size > 0
    assert s["schema_version"] == SCHEMA_VERSION
    assert s["command"] == "embedx extract wavs/"
    assert s["num_items"] == N
    columns = {c["name"]: c for c in s["columns"]}
    assert list(columns) == list(make_items().columns)
    assert columns["label"]["num_unique"] == 3 and columns["label"]["num_missing"] == 3
    assert columns["label"]["counts"] == {"ärger": 3, "freude": 3, "中性": 2}
    assert columns["speaker"]["counts"] == {"spk0": 4, "spk1": 4, "spk2": 3}
    assert columns["id"]["num_unique"] == N and "counts" not in columns["id"]
    fs = s["feature_sets"][spec.name]
    assert fs["backend"] == "hf"
    assert fs["model"] == "org/tiny" and fs["revision"] == "abc123"
    assert fs["layers"] == [0, 3, 7] and fs["dim"] == DIM
    assert fs["poolings"] == ["mean", "std"]
    assert fs["frames"] is True and fs["total_frames"] == 2 * N
    assert fs["dtype"] == "float32" and fs["frame_rate"] == pytest.approx(49.9)
    assert fs["heads"] == {"adv": ["arousal", "dominance", "valence"]}
    assert fs["done"] == 2 and fs["failed"] == 1
    assert fs["command"] == "embedx extract wavs/"


# ------------------------------------------------------------------------------------- specs


def test_spec_differences():
    a = make_spec(feature_names=tuple("abcdef"))
    assert a.differences(a) == []
    b = make_spec(
        backend="opensmile",
        dim=6,
        poolings=("mean",),
        frames=True,
        dtype="float16",
        heads={},
        feature_names=tuple("abXdef"),
        config={"layers": [0, 3, 7], "precision": "fp32"},
        frame_rate=50.0,
        attrs={},
    )
    diffs = a.differences(b)
    assert diffs[0] == "backend: stored 'hf' vs requested 'opensmile'"
    joined = "\n".join(diffs)
    assert "poolings: stored ('mean', 'std') vs requested ('mean',)" in joined
    assert "frames: stored False vs requested True" in joined
    assert "dtype: stored 'float32' vs requested 'float16'" in joined
    assert "heads:" in joined
    assert (
        "feature_names: stored 6 names vs requested 6 names (first difference at 2: 'c' vs 'X')"
        in joined
    )
    assert "config.short_items: stored pad vs requested <absent>" in joined
    assert "frame_rate" not in joined and "attrs" not in joined
    assert len(diffs) == 7


# ---------------------------------------------------------------- copying between stores (merge's seam)


def test_a_store_copied_through_the_writers_copy_methods_reads_back_equal(tmp_path):
    rng = np.random.default_rng(11)
    spec = make_spec(frames=True)
    counts = np.array([4, 0, 2, 7, 1, 3, 5, 2, 6, 1, 3])
    src, dst = tmp_path / "src.h5", tmp_path / "dst.h5"
    pooled = {p: random_batch(rng, N) for p in spec.poolings}  # (num_layers, num_items, dim)
    heads = rng.standard_normal((N, 3)).astype(np.float32)
    frames = [rng.standard_normal((c, len(LAYERS), DIM)).astype(np.float32) for c in counts]
    written = np.array([0, 1, 2, 3, 5, 6, 8, 9, 10])  # 4 and 7 not done, 7 failed
    with StoreWriter(src, command="embedx extract src") as w:
        w.write_items(make_items())
        w.create_feature_set(spec, num_frames=counts)
        w.write(spec.name, written, pooled={p: x[:, written, :] for p, x in pooled.items()},
                heads={"adv": heads[written]}, frames=[frames[i] for i in written])
        w.record_failure(spec.name, 7, "decode", "cannot decode")
    with StoreReader(src) as r, StoreWriter(dst, command="copy") as w:
        w.set_merged_from(["a.h5", "b.h5"])
        w.write_item_columns({c: r.item_column(c) for c in r.item_columns()})
        w.create_feature_set(r.spec(spec.name), num_frames=np.diff(r.frame_offsets(spec.name)),
                             fill=False)
        w.set_origin(spec.name, r.origin(spec.name))
        for key in ("pooled/mean", "pooled/std", "heads/adv", "frames/data"):
            w.dataset(spec.name, key)[...] = r.dataset(spec.name, key)[()]
        w.mark_done(spec.name, r.done(spec.name))
        w.append_failures(r.failed())
        origin = r.origin(spec.name)
    assert origin["command"] == "embedx extract src" and set(origin) == {"created", "command",
                                                                         "embedx_version"}
    with StoreReader(dst) as r:
        assert r.merged_from == ["a.h5", "b.h5"] and r.attrs["command"] == "copy"
        pd.testing.assert_frame_equal(r.items, make_items().assign(
            label=make_items()["label"].where(make_items()["label"].notna())))
        assert r.item_column("label")[2] == ""  # a missing string is copied as stored
        assert r.spec(spec.name) == spec and r.origin(spec.name) == origin
        np.testing.assert_array_equal(r.done(spec.name), np.isin(np.arange(N), written))
        for i in written:
            for p in spec.poolings:
                np.testing.assert_array_equal(r.pooled(spec.name, p, 3)[i], pooled[p][1, i])
            np.testing.assert_array_equal(r.frames(spec.name, int(i)), frames[i])
        np.testing.assert_array_equal(r.heads(spec.name, "adv")[0][written], heads[written])
        assert r.failed()[["set", "index", "id", "stage"]].values.tolist() == [
            [spec.name, 7, "spk1/utt07.wav", "decode"]]


def test_the_copy_methods_refuse_bad_values_quoting_them(store):
    spec = make_spec()
    with StoreWriter(store) as w:
        with pytest.raises(StoreError, match=r"include id and path, all of one length; got "
                                             r"lengths \{'id': 2, 'path': 3\}"):
            w.write_item_columns({"id": np.array(["a", "b"], dtype=object),
                                  "path": np.array(["a", "b", "c"], dtype=object)})
        w.write_items(make_items())
        with pytest.raises(StoreError, match="has items already; write_item_columns starts a new"):
            w.write_item_columns({"id": np.array(["a"], dtype=object),
                                  "path": np.array(["a"], dtype=object)})
        w.create_feature_set(spec)
        with pytest.raises(StoreError, match=r"origin keys \['model_id'\] are not accepted; "
                                             r"accepted: created, command, embedx_version"):
            w.set_origin(spec.name, {"command": "x", "model_id": "y"})
        with pytest.raises(StoreError, match=r"done must be 11 bools \(one per item\), got shape "
                                             r"\(10,\) of bool"):
            w.mark_done(spec.name, np.ones(10, dtype=bool))
        with pytest.raises(StoreError, match=r"has no dataset 'pooled/max'"):
            w.dataset(spec.name, "pooled/max")
        with pytest.raises(StoreError, match=r"no item column 'gender'; stored: id, path, duration"):
            w.item_column("gender")
        assert not w.done(spec.name).any()  # nothing was marked by the refused calls


def test_the_store_package_imports_without_cycles():
    """Every module of embedx/store imports (at module level) only modules that import it not."""
    import ast

    root = REPO / "embedx" / "store"
    graph = {}
    for path in root.glob("*.py"):
        deps = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("embedx.store."):
                deps.add(node.module.split(".")[2])
        graph[path.stem] = deps
    assert {"spec", "lock", "base", "reader", "writer", "merging"} <= set(graph)
    order: list[str] = []  # Kahn's algorithm: a module goes once all it imports went
    while len(order) < len(graph):
        ready = sorted(m for m, deps in graph.items() if m not in order and deps <= set(order))
        assert ready, f"import cycle among {sorted(set(graph) - set(order))}"
        order += ready
    assert order.index("spec") < order.index("writer") < order.index("merging")


def test_config_text_does_not_depend_on_an_imported_oyaml():
    """A store's config text is the same whether or not the writing process imported ``oyaml``.

    ``oyaml`` (pulled in by opensmile's audobject) replaces PyYAML's dict representer and ignores
    ``sort_keys``; run in a child process so the patch does not leak into other tests.
    """
    pytest.importorskip("oyaml")
    code = textwrap.dedent(
        """
        from embedx.store.spec import _yaml
        value = {"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": 2}}
        before = _yaml(value)
        import oyaml  # noqa: F401  (patches yaml on import)
        print(before == _yaml(value))
        print(repr(_yaml(value)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    same, text = out.splitlines()
    assert same == "True"
    assert text == repr("a:\n  c: 2\n  d:\n  - 1\n  - y: 1\n    z: 0\nb: 1\n")
