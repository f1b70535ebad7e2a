"""Tests of embedx.store.merge and `embedx merge`: sharded runs merge into an unsharded run."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import embedx.store.merging as store_mod  # MERGE_BLOCK_BYTES and _ensure_open_files live there
from embedx.cli import app
from embedx.errors import StoreError
from embedx.extraction.config import ExtractConfig
from embedx.extraction.extract import extract
from embedx.extraction.shard import items_digest, select
from embedx.store import FeatureSetSpec, StoreReader, StoreWriter, merge
from embedx.testing.synth import mixed_item

# root attrs and feature-set attrs that record when/how a file was made, not what it holds
VOLATILE_ROOT = {"created", "command", "merged_from"}
VOLATILE_SET = {"created", "command"}


# ------------------------------------------------------------------------------ comparison


def _datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}
    f.visititems(lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return out


def _attrs(obj, skip=()) -> dict:
    # run_* attrs profile the run that wrote a set (speed, device, times), not its data
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obj.attrs.items()
            if k not in skip and not k.startswith("run_")}


def _without_run(spec: FeatureSetSpec) -> FeatureSetSpec:
    from dataclasses import replace

    return replace(spec, attrs={k: v for k, v in spec.attrs.items() if not k.startswith("run_")})


def assert_identical(merged: Path, whole: Path) -> None:
    """Everything a reader can see is equal, values bit for bit; /failed compared as a set."""
    with h5py.File(merged, "r") as a, h5py.File(whole, "r") as b:
        ra, rb = _attrs(a, VOLATILE_ROOT), _attrs(b, VOLATILE_ROOT)
        assert ra == rb
        assert "merged_from" in a.attrs and not any(k.startswith("shard") for k in a.attrs)
        da = {k: v for k, v in _datasets(a).items() if not k.startswith("failed/")}
        db = {k: v for k, v in _datasets(b).items() if not k.startswith("failed/")}
        assert sorted(da) == sorted(db)
        for name in da:
            x, y = da[name], db[name]
            assert (x.shape, x.dtype, x.chunks) == (y.shape, y.dtype, y.chunks), name
            skip = VOLATILE_SET if name.count("/") == 2 and name.startswith("features/") else ()
            assert _attrs(x, skip) == _attrs(y, skip), name
            if h5py.check_string_dtype(x.dtype) is not None:
                assert x.asstr()[()].tolist() == y.asstr()[()].tolist(), name
            else:
                assert x[()].tobytes() == y[()].tobytes(), name  # bit for bit, NaN included
        for name in a.get("features", {}):
            assert _attrs(a["features"][name], VOLATILE_SET) == _attrs(b["features"][name], VOLATILE_SET)
    with StoreReader(merged) as r, StoreReader(whole) as s:
        pd.testing.assert_frame_equal(r.items, s.items)
        key = ["set", "index"]
        pd.testing.assert_frame_equal(r.failed().sort_values(key).reset_index(drop=True),
                                      s.failed().sort_values(key).reset_index(drop=True))
        for name in s.feature_sets():
            assert _without_run(r.spec(name)) == _without_run(s.spec(name))
        assert r.shard is None


# ------------------------------------------------------------------------------ synthetic stores

N = 23
LAYERS = (0, 2, 5)
DIM = 4


def synthetic_items(n: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    dur = rng.uniform(0.1, 6.0, n)
    dur[7] = np.nan
    return pd.DataFrame({
        "id": [f"spk{i % 3}/u{i:02d}.wav" for i in range(n)],
        "path": [f"/data/spk{i % 3}/u{i:02d}.wav" for i in range(n)],
        "duration": dur,
        "sample_rate": 16000,
        "num_samples": np.nan_to_num(dur * 16000).astype(np.int64),
        "label": [["anger", None, "joy", "ärger"][i % 4] for i in range(n)],
        # nullable columns with one missing value: float64 in the shard that holds it, int64 /
        # bool in the others; the merged column must be float64 like the unsharded one
        "age": pd.array([None if i == 11 else 20 + i for i in range(n)], dtype="Int64"),
        "train": pd.array([None if i == 11 else i % 2 == 0 for i in range(n)], dtype="boolean"),
        "valence": [0.25 * i for i in range(n)],
    })


def synthetic_spec(name: str = "toy", **changes) -> FeatureSetSpec:
    kwargs = dict(name=name, backend="hf", layers=LAYERS, dim=DIM, poolings=("mean", "std"),
                  frames=True, dtype="float16", frame_rate=49.9,
                  heads={"adv": ("arousal", "dominance", "valence")},
                  attrs={"model_id": "org/toy", "torch_version": "2.11"},
                  config={"layers": "0,2,5", "poolings": ["mean", "std"]})
    kwargs.update(changes)
    return FeatureSetSpec(**kwargs)


class Data:
    """Random features of the synthetic items; items in FAILED are recorded failed, not written."""

    FAILED = {4: ("decode", "bad header"), 18: ("forward", "too short")}

    def __init__(self, n: int = N, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.counts = rng.integers(0, 6, n)
        self.counts[[1, 9]] = 0  # items without frames
        self.pooled = {p: rng.standard_normal((len(LAYERS), n, DIM)).astype(np.float16)
                       for p in ("mean", "std")}
        self.frames = [rng.standard_normal((c, len(LAYERS), DIM)).astype(np.float16) for c in self.counts]
        self.heads = rng.standard_normal((n, 3)).astype(np.float32)

    def fill(self, w: StoreWriter, spec: FeatureSetSpec, rows: np.ndarray) -> None:
        """Write global items ``rows`` (stored at positions 0..len(rows)-1), in shuffled batches."""
        local = np.arange(len(rows))
        todo = [i for i in np.random.default_rng(len(rows)).permutation(local)
                if int(rows[i]) not in self.FAILED]
        for batch in np.array_split(np.array(todo, dtype=np.int64), 3):
            if len(batch):
                g = rows[batch]
                w.write(spec.name, batch, pooled={p: x[:, g] for p, x in self.pooled.items()},
                        frames=[self.frames[i] for i in g], heads={"adv": self.heads[g]})
        for i in local:
            if int(rows[i]) in self.FAILED:
                w.record_failure(spec.name, int(i), *self.FAILED[int(rows[i])])


def write_whole(path: Path, data: Data, spec: FeatureSetSpec | None = None) -> Path:
    spec = spec or synthetic_spec()
    items = synthetic_items()
    with StoreWriter(path, command="embedx extract x") as w:
        w.write_items(items)
        w.create_feature_set(spec, num_frames=data.counts)
        data.fill(w, spec, np.arange(len(items)))
    return path


def write_shard(path: Path, k: int, n: int, data: Data, spec: FeatureSetSpec | None = None,
                items: pd.DataFrame | None = None, finish: bool = True) -> Path:
    spec = spec or synthetic_spec()
    items = synthetic_items() if items is None else items
    idx = select(items["duration"].to_numpy(), k, n)
    with StoreWriter(path, command=f"embedx extract x --shard {k}/{n}") as w:
        w.write_items(items.iloc[idx].reset_index(drop=True))
        w.set_shard(k, n, idx, len(items), items_digest(items["id"]))
        w.create_feature_set(spec, num_frames=data.counts[idx])
        if finish:
            data.fill(w, spec, idx)
    return path


@pytest.fixture
def shards(tmp_path):
    data = Data()
    return data, [write_shard(tmp_path / f"shard-{k}.h5", k, 3, data) for k in range(3)]


@pytest.mark.parametrize("block_bytes", [None, 40])
def test_merge_equals_unsharded(tmp_path, shards, block_bytes, monkeypatch):
    if block_bytes is not None:  # blocks of a few rows/frames: every block path is taken
        monkeypatch.setattr(store_mod, "MERGE_BLOCK_BYTES", block_bytes)
    data, files = shards
    whole = write_whole(tmp_path / "whole.h5", data)
    out = tmp_path / "merged.h5"
    summary = merge(files[::-1], out, command="embedx merge ...")
    assert summary.num_items == N and summary.feature_sets == ["toy"] and summary.failed == 2
    assert summary.inputs == files[::-1] and summary.notes == []
    assert summary.size_bytes == out.stat().st_size and "merged 3 shards" in summary.line()
    assert_identical(out, whole)
    with StoreReader(out) as r:
        assert r.merged_from == [str(f) for f in files[::-1]]
        assert r.summary()["merged_from"] == [str(f) for f in files[::-1]]
        assert r.items["age"].dtype == np.float64 and np.isnan(r.items["age"][11])
        assert r.attrs["command"] == "embedx merge ..."
        np.testing.assert_array_equal(r.pooled("toy", "std", 2)[3], data.pooled["std"][1, 3].astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["merged.h5", "whole.h5"] + [f"shard-{k}.h5" for k in range(3)])  # no lock file is left behind


def test_merge_two_feature_sets_and_one_shard(tmp_path):
    data = Data()
    other = synthetic_spec("other", frames=False, poolings=("max",), heads={}, dtype="float32")
    files = []
    for k in range(2):
        path = write_shard(tmp_path / f"s{k}.h5", k, 2, data)
        idx = select(synthetic_items()["duration"].to_numpy(), k, 2)
        with StoreWriter(path) as w:
            w.create_feature_set(other)
            w.write("other", np.arange(len(idx)), pooled={"max": data.pooled["mean"][:, idx].astype(np.float32)})
        files.append(path)
    whole = write_whole(tmp_path / "whole.h5", data)
    with StoreWriter(whole) as w:
        w.create_feature_set(other)
        w.write("other", np.arange(N), pooled={"max": data.pooled["mean"].astype(np.float32)})
    merge(files, tmp_path / "m.h5")
    assert_identical(tmp_path / "m.h5", whole)
    # N = 1: a single shard merges into the whole store
    one = write_shard(tmp_path / "one.h5", 0, 1, data)
    merge([one], tmp_path / "m1.h5")
    assert_identical(tmp_path / "m1.h5", write_whole(tmp_path / "whole1.h5", data))


# ------------------------------------------------------------------------------ refusals


def _refused(inputs, out, says, keep=False):
    """merge refuses with a one-line StoreError containing ``says`` and writes nothing."""
    with pytest.raises(StoreError) as err:
        merge(inputs, out)
    msg = str(err.value)
    assert "\n" not in msg and says in msg, msg
    assert keep or not Path(out).exists()
    assert not list(Path(out).parent.glob(".*merging*"))
    return msg


def test_merge_refuses_doubled_missing_and_foreign_shards(tmp_path, shards):
    data, files = shards
    out = tmp_path / "m.h5"
    copy = tmp_path / "copy-of-1.h5"
    shutil.copy(files[1], copy)
    msg = _refused([*files, copy], out, "shard 1/3 is given 2 times")
    assert str(files[1]) in msg and str(copy) in msg
    msg = _refused(files[:2], out, "shard 2/3 missing (1 of 3; given: 0/3 ")
    assert str(files[0]) in msg
    _refused([files[0], files[0]], out, "is given twice")
    _refused([], out, "no shard files to merge")
    four = write_shard(tmp_path / "four.h5", 3, 4, data)
    msg = _refused([*files, four], out, "shards of different splits")
    assert "shard 3/4" in msg and str(four) in msg
    other_items = synthetic_items()
    other_items.loc[5, "id"] = "spk2/renamed.wav"
    foreign = write_shard(tmp_path / "foreign.h5", 2, 3, data, items=other_items)
    _refused([files[0], files[1], foreign], out, "was split from another item list")
    whole = write_whole(tmp_path / "whole.h5", data)
    _refused([whole], out, "is not a shard file (a whole store")
    merge(files, out)
    _refused(files, out, "exists; use overwrite=True", keep=True)
    merge(files, out, overwrite=True)
    _refused(files, files[0], "is one of the shard files", keep=True)


def test_merge_refuses_other_settings_models_and_unfinished_shards(tmp_path, shards):
    data, files = shards
    out = tmp_path / "m.h5"
    bad = write_shard(tmp_path / "bad.h5", 2, 3, data, spec=synthetic_spec(
        config={"layers": "0,2,5", "poolings": ["mean", "std"], "precision": "fp16"}))
    msg = _refused([files[0], files[1], bad], out, "feature set 'toy' was extracted with other settings")
    assert "config.precision: shard 0/3 <absent> vs shard 2/3 fp16" in msg and str(bad) in msg
    bad = write_shard(tmp_path / "bad2.h5", 2, 3, data, spec=synthetic_spec(
        attrs={"model_id": "org/other", "torch_version": "2.11"}))
    _refused([files[0], files[1], bad], out, "model_id is 'org/toy' in shard 0/3")
    bad = write_shard(tmp_path / "bad3.h5", 2, 3, data, spec=synthetic_spec("renamed"))
    _refused([files[0], files[1], bad], out, "feature set 'renamed' is in shard 2/3")
    bad = write_shard(tmp_path / "bad4.h5", 2, 3, data, finish=False)
    pending = len(select(synthetic_items()["duration"].to_numpy(), 2, 3))
    _refused([files[0], files[1], bad], out,
             f"shard 2/3 ({bad}) has {pending} items neither done nor failed in feature set 'toy'; "
             "finish it first (re-run the same command)")
    # attrs that do not name the model only produce a note
    note = write_shard(tmp_path / "note.h5", 2, 3, data, spec=synthetic_spec(
        attrs={"model_id": "org/toy", "torch_version": "2.12"}))
    summary = merge([files[0], files[1], note], out)
    assert summary.notes == ["feature set 'toy': attr torch_version is '2.11' in shard 0/3 but '2.12' "
                             "in shard 2/3; the merged file keeps '2.11'"]


# ------------------------------------------------------------------------------ end to end

# mixed lengths and rates; one item shorter than the model's minimum, one unreadable file
SPECS = [  # (name, seconds, sample rate)
    ("a/long.wav", 2.1, 16000),
    ("a/mid.flac", 1.1, 22050),
    ("b/r44k.wav", 0.9, 44100),
    ("b/short.wav", 0.31, 16000),
    ("c/tiny.wav", 0.02, 16000),
    ("c/eight.wav", 0.7, 8000),
]


@pytest.fixture
def corpus(write_audio, tmp_path):
    rng = np.random.default_rng(1)
    for k, (rel, seconds, rate) in enumerate(SPECS):
        wave = mixed_item(k, seconds, rate, rng)
        write_audio(f"wavs/{rel}", wave, rate)
    (tmp_path / "wavs/c/broken.wav").write_bytes(b"RIFF not really a wav file")
    rows = [(rel, ["angry", "happy", None][k % 3], f"spk{k % 2}") for k, (rel, _, _) in enumerate(SPECS)]
    rows.append(("c/broken.wav", "sad", "spk1"))
    pd.DataFrame(rows, columns=["path", "label", "speaker"]).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "wavs", tmp_path / "labels.csv"


def test_sharded_extract_merges_into_the_unsharded_store(tiny_model, corpus, tmp_path):
    wavs, labels = corpus
    model = str(tiny_model("hubert"))
    whole = tmp_path / "whole.h5"
    config = ExtractConfig(model=model, poolings=("mean", "std"), frames=True, precision="fp32",
                           device="cpu", batch_seconds=2.0, workers=0, progress=False,
                           manifest=str(labels))
    summary = extract([str(wavs)], whole, config)
    assert summary.failed == 1 and summary.processed == 6

    runner = CliRunner()
    args = ["extract", str(wavs), "--manifest", str(labels), "-m", model, "--pooling", "mean,std",
            "--frames", "--precision", "fp32", "--device", "cpu", "--batch-seconds", "2",
            "--workers", "0", "--quiet"]
    files = []
    for k in range(3):
        path = tmp_path / f"shard-{k}.h5"
        result = runner.invoke(app, [*args, "--shard", f"{k}/3", "-o", str(path)])
        assert result.exit_code == 0, result.output
        files.append(path)
    sizes = []
    with StoreReader(whole) as w:
        for k, path in enumerate(files):
            with StoreReader(path) as r:
                assert r.shard.label == f"{k}/3" and r.shard.total_items == 7
                pd.testing.assert_frame_equal(r.items, w.items.iloc[r.shard.indices].reset_index(drop=True))
                sizes.append(r.num_items)
    assert sum(sizes) == 7 and min(sizes) >= 1

    # a shard missing: one line, exit code 2, no output file
    out = tmp_path / "merged.h5"
    result = runner.invoke(app, ["merge", str(files[0]), str(files[2]), "-o", str(out)])
    assert result.exit_code == 2 and "store: shard 1/3 missing" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()

    result = runner.invoke(app, ["merge", *map(str, files), "-o", str(out)])
    assert result.exit_code == 0, result.output
    # one line: each shard's run_* attrs (throughput, finish time) always differ, no note each
    [line] = result.output.strip().splitlines()
    assert line.startswith("merged 3 shards into ") and "7 items" in line, result.output
    assert_identical(out, whole)
    with StoreReader(out) as r:
        assert r.failed()["id"].tolist() == ["c/broken.wav"]
        assert r.done(r.feature_sets()[0]).sum() == 6

    # the CLI names its flag where the library names the API argument (overwrite=True)
    result = runner.invoke(app, ["merge", *map(str, files), "-o", str(out)])
    assert result.exit_code == 2 and f"{out} exists; use --overwrite to replace it" in result.output
    # ... and the shard files a merge wants, by the option that writes them
    result = runner.invoke(app, ["merge", str(whole), "-o", str(tmp_path / "m2.h5")])
    assert result.exit_code == 2 and "written by an extraction with --shard K/N" in result.output


def test_merge_many_small_shards(tmp_path):
    data = Data()
    files = [write_shard(tmp_path / f"s{k:02d}.h5", k, 10, data) for k in range(10)]
    merge(files, tmp_path / "m.h5")
    assert_identical(tmp_path / "m.h5", write_whole(tmp_path / "whole.h5", data))


def test_merge_raises_the_open_file_limit_or_says_why(monkeypatch):
    import resource

    calls = []
    monkeypatch.setattr(resource, "setrlimit", lambda kind, limits: calls.append(limits))
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (100, 4096))
    store_mod._ensure_open_files(500)
    assert calls == [(564, 4096)]
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (100, 200))
    with pytest.raises(StoreError, match=r"merging 500 shard files needs about 564 open files but the hard "
                                         r"limit is 200 \(ulimit -Hn\)"):
        store_mod._ensure_open_files(500)
    store_mod._ensure_open_files(10)  # within the limit: nothing to do
    assert len(calls) == 1
