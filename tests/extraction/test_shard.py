"""Tests of embedx.extraction.shard (which items a shard holds) and the store's shard metadata."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from embedx.cli import app
from embedx.errors import ConfigError, StoreError
from embedx.extraction.config import DATA_KEYS, ExtractConfig
from embedx.extraction.shard import assign, items_digest, parse_shard, select, slurm_shard, take
from embedx.store import StoreReader, StoreWriter

# ------------------------------------------------------------------------------ parse_shard


@pytest.mark.parametrize("spec, expected", [("0/4", (0, 4)), ("3/4", (3, 4)), (" 1 / 2 ", (1, 2)),
                                            ("0/1", (0, 1))])
def test_parse_shard(spec, expected):
    assert parse_shard(spec) == expected


@pytest.mark.parametrize("spec, says", [
    ("4/4", "K must be in 0..3"),
    ("-1/4", "K must be in 0..3"),
    ("0/0", "N must be at least 1"),
    ("1/-2", "N must be at least 1"),
    ("a/b", "not a shard spec"),
    ("2", "not a shard spec"),
    ("1/2/3", "not a shard spec"),
    ("", "not a shard spec"),
    ("1.0/2", "not a shard spec"),
])
def test_parse_shard_rejects(spec, says):
    with pytest.raises(ConfigError) as err:
        parse_shard(spec)
    msg = str(err.value)
    assert says in msg and repr(spec) in msg and "K/N" in msg and "\n" not in msg


# ------------------------------------------------------------------------------ assign


def test_assign_longest_first_to_least_loaded():
    # 5 -> s0 (tie -> lower id), 4 -> s1, 3 -> s1 (4 < 5), 3 -> s0 (5 < 7), 3 -> s1 (7 < 8)
    assert assign(np.array([5.0, 4, 3, 3, 3]), 2).tolist() == [0, 1, 1, 0, 1]


def test_assign_ties_keep_item_order_and_nan_counts_as_zero():
    assert assign(np.ones(4), 2).tolist() == [0, 1, 0, 1]
    # order 2 (item 1), 1 (item 2), nan=0 (item 0): 2 -> s0, 1 -> s1, 0 -> s1 (1 < 2)
    assert assign(np.array([np.nan, 2.0, 1.0]), 2).tolist() == [1, 0, 1]


def test_assign_partitions_balanced_and_deterministic():
    rng = np.random.default_rng(0)
    d = rng.lognormal(1.0, 0.8, 1001)
    d[::97] = np.nan
    for n in (1, 2, 3, 7, 16):
        ids = assign(d, n)
        assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < n
        assert np.array_equal(ids, assign(d.copy(), n))
        parts = [select(d, k, n) for k in range(n)]
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(d)))
        for p in parts:
            assert np.all(np.diff(p) > 0)
        totals = np.array([np.nansum(d[p]) for p in parts])
        # LPT: no shard exceeds another by more than the longest item
        assert totals.max() - totals.min() <= np.nanmax(d) + 1e-9


def test_more_shards_than_items_leaves_shards_empty():
    d = np.array([1.0, 2.0])
    assert select(d, 2, 4).size == 0
    assert sorted(np.concatenate([select(d, k, 4) for k in range(4)]).tolist()) == [0, 1]


def test_assign_and_select_reject_bad_counts():
    with pytest.raises(ConfigError, match="number of shards"):
        assign(np.ones(3), 0)
    with pytest.raises(ConfigError, match="K must be in 0..2"):
        select(np.ones(3), 3, 3)


def test_items_digest_is_sha256_of_ids_joined_by_newlines():
    ids = ["a/x.wav", "b/ü.wav", "c.wav"]
    assert items_digest(ids) == hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()
    assert items_digest([]) == hashlib.sha256(b"").hexdigest()
    assert items_digest(ids) != items_digest(ids[::-1])


# ------------------------------------------------------------------------------ take


def _items(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({
        "id": [f"u{i}" for i in range(n)],
        "path": [f"/d/u{i}.wav" for i in range(n)],
        "duration": np.array([3.0, 1.0, np.nan, 2.0, 5.0, 0.5], dtype=np.float32)[:n],
        "label": list("abcdef")[:n],
    })


def test_take_restricts_items_and_remaps_errors():
    items = _items()
    errors = {2: "unreadable", 5: "bad header"}
    seen = []
    for k in range(2):
        part, errs, shard = take(items, errors, f"{k}/2")
        assert shard.index == k and shard.count == 2 and shard.label == f"{k}/2"
        assert shard.total_items == 6 and shard.items_digest == items_digest(items["id"])
        assert np.array_equal(shard.indices, select(items["duration"].to_numpy(), k, 2))
        assert part.index.tolist() == list(range(len(part)))
        pd.testing.assert_frame_equal(part, items.iloc[shard.indices].reset_index(drop=True))
        for pos, msg in errs.items():
            assert errors[int(shard.indices[pos])] == msg
        seen += [int(shard.indices[p]) for p in errs]
    assert sorted(seen) == [2, 5]


def test_take_refuses_an_empty_shard():
    with pytest.raises(ConfigError, match=r"shard 3/4 has no items .* at most 2 shards"):
        take(_items(2), {}, "3/4")


def test_shard_is_a_run_option():
    assert "shard" not in DATA_KEYS
    with pytest.raises(ConfigError, match="'5/5'"):
        ExtractConfig(model="m", shard="5/5").validate()
    ExtractConfig(model="m", shard="4/5").validate()


def test_cli_extract_rejects_a_bad_shard_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["extract", str(tmp_path), "-m", str(tmp_path), "--shard", "4/4",
                                      "-o", str(tmp_path / "x.h5"), "--quiet"])
    assert result.exit_code == 2
    assert "invalid option" in result.output and "'4/4'" in result.output
    assert not (tmp_path / "x.h5").exists()


# ------------------------------------------------------------------------------ store metadata


def test_set_shard_round_trip_and_idempotent(tmp_path):
    items = _items()
    part, _, shard = take(items, {}, "1/2")
    path = tmp_path / "s.h5"
    with StoreWriter(path) as w:
        assert w.shard is None
        w.write_items(part)
        w.set_shard(shard.index, shard.count, shard.indices, shard.total_items, shard.items_digest)
    with StoreWriter(path) as w:  # a resumed run records the same again
        w.write_items(part)
        w.set_shard(1, 2, shard.indices, 6, shard.items_digest)
    with StoreReader(path) as r:
        info = r.shard
        assert (info.index, info.count, info.total_items) == (1, 2, 6)
        assert info.items_digest == shard.items_digest and info.label == "1/2"
        assert np.array_equal(info.indices, shard.indices) and info.indices.dtype == np.int64
        assert r.attrs["shard_index"] == 1 and r.attrs["shard_count"] == 2
        assert r.summary()["shard"] == f"1/2 ({len(part)} of 6 items)"
        assert r.merged_from is None


def test_set_shard_refuses_another_shard_and_bad_values(tmp_path):
    items = _items()
    part, _, shard = take(items, {}, "0/2")
    digest = shard.items_digest
    path = tmp_path / "s.h5"
    with StoreWriter(path) as w:
        with pytest.raises(StoreError, match="call write_items before set_shard"):
            w.set_shard(0, 2, shard.indices, 6, digest)
        w.write_items(part)
        w.set_shard(0, 2, shard.indices, 6, digest)
        with pytest.raises(StoreError, match=r"already holds another shard: shard 0/2 vs this run's shard 1/2"):
            w.set_shard(1, 2, shard.indices, 6, digest)
        with pytest.raises(StoreError, match="another shard: an item list of 6 items"):
            w.set_shard(0, 2, shard.indices, 7, "0" * 64)
        for args, says in [
            ((2, 2, shard.indices, 6, digest), "invalid shard 2/2"),
            ((0, 0, shard.indices, 6, digest), "invalid shard 0/0"),
            ((0, 2, shard.indices[:-1], 6, digest), f"must be {len(part)} integers"),
            ((0, 2, shard.indices[::-1], 6, digest), "increase strictly"),
            ((0, 2, shard.indices + 10, 6, digest), "increase strictly within 0..5"),
            ((0, 2, shard.indices, 6, "xyz"), "64 lowercase hex"),
            ((0.0, 2, shard.indices, 6, digest), "must be integers"),
        ]:
            with pytest.raises(StoreError, match=says):
                w.set_shard(*args)
    with StoreReader(path) as r:
        assert r.shard.label == "0/2"


# ------------------------------------------------------------------------------ --shard auto (SLURM arrays)


def _array(monkeypatch, task, count, low, step=None):
    for var, value in (("SLURM_ARRAY_TASK_ID", task), ("SLURM_ARRAY_TASK_COUNT", count),
                       ("SLURM_ARRAY_TASK_MIN", low), ("SLURM_ARRAY_TASK_STEP", step)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, str(value))


@pytest.mark.parametrize("task, count, low, step, expected", [
    (0, 4, 0, None, (0, 4)),    # --array=0-3
    (3, 4, 0, 1, (3, 4)),
    (1, 4, 1, None, (0, 4)),    # --array=1-4: ids start at 1
    (4, 4, 1, None, (3, 4)),
    (6, 4, 0, 2, (3, 4)),       # --array=0-6:2 -> ids 0, 2, 4, 6
    (12, 3, 10, 1, (2, 3)),     # --array=10-12
])
def test_shard_auto_reads_the_slurm_array(monkeypatch, task, count, low, step, expected):
    _array(monkeypatch, task, count, low, step)
    assert parse_shard("auto") == expected == slurm_shard()


def test_shard_auto_outside_an_array_is_one_line(monkeypatch):
    _array(monkeypatch, None, None, None)
    with pytest.raises(ConfigError) as err:
        parse_shard("auto")
    assert str(err.value) == ("shard='auto' needs a SLURM array job, but $SLURM_ARRAY_TASK_ID is not set; submit "
                              "with sbatch -a 0-3 (4 shards), or give shard='K/N'")
    _array(monkeypatch, 5, 4, 1)  # --array=1,3,5,9 is 4 tasks whose ids do not map onto 0..3
    with pytest.raises(ConfigError, match=r"SLURM array task 5 \(min 1, step 1, count 4\) is not one of 4"):
        parse_shard("auto")
    _array(monkeypatch, 3, 4, 0, 2)
    with pytest.raises(ConfigError, match="is not one of 4 evenly spaced ids"):
        parse_shard("auto")


def test_cli_shard_auto_is_the_array_tasks_shard(tiny_model, write_audio, tmp_path, monkeypatch):
    """`extract --shard auto` in task 2 of `--array=1-3` writes shard 1/3, as `--shard 1/3` does."""
    from embedx.testing.synth import chirp

    for k in range(5):
        write_audio(f"wavs/{k}.wav", chirp(200 + 50 * k, 900, 0.3 + 0.1 * k, 16000))
    args = ["extract", str(tmp_path / "wavs"), "-m", str(tiny_model("hubert")), "--device", "cpu",
            "--workers", "0", "--quiet"]
    _array(monkeypatch, None, None, None)
    out = CliRunner().invoke(app, [*args, "--shard", "auto", "-o", str(tmp_path / "x.h5")])
    assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
    assert "--shard auto needs a SLURM array job, but $SLURM_ARRAY_TASK_ID is not set" in out.output
    assert "or give --shard K/N" in out.output and not (tmp_path / "x.h5").exists()

    _array(monkeypatch, 2, 3, 1)
    auto = CliRunner().invoke(app, [*args, "--shard", "auto", "-o", str(tmp_path / "auto.h5")])
    by_hand = CliRunner().invoke(app, [*args, "--shard", "1/3", "-o", str(tmp_path / "hand.h5")])
    assert auto.exit_code == 0 and by_hand.exit_code == 0, auto.output + by_hand.output
    with StoreReader(tmp_path / "auto.h5") as a, StoreReader(tmp_path / "hand.h5") as b:
        assert a.shard.label == "1/3" and a.shard.indices.tolist() == b.shard.indices.tolist()
        pd.testing.assert_frame_equal(a.items, b.items)
        name = a.feature_sets()[0]
        np.testing.assert_array_equal(a.pooled(name, "mean", 0), b.pooled(name, "mean", 0))
