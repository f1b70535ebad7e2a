"""Tests of embedx.extraction.cluster: `extract --engine ray --shards N` on a local Ray (CPU
only), with every shard's worker killed mid-shard once, equals a one-process run."""

from __future__ import annotations

from typer.testing import CliRunner

from embedx.cli import app
from embedx.extraction.cluster import kill_marker
from embedx.extraction.scale import shard_paths
from embedx.store import StoreReader
from tests.extraction.test_scale import FILES, corpus, one_process_reference  # noqa: F401  (corpus: a fixture)
from tests.test_merge import assert_identical


def test_ray_shards_with_killed_workers_equal_a_one_process_run(local_ray, tiny_model, corpus, tmp_path):  # noqa: F811
    wavs, labels = corpus
    model = str(tiny_model("hubert"))
    out = tmp_path / "feats.h5"
    args = ["extract", str(wavs), "--manifest", str(labels), "-m", model, "--pooling", "mean,max",
            "--frames", "--precision", "fp32", "--batch-seconds", "0.2", "--workers", "0",
            "--engine", "ray", "--shards", "3", "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "8 items in 3 shards (Ray tasks of 1 CPU each, up to 3 retries)" in said
    # what the lost attempts did (items written, the broken file recorded) counts as resumed
    assert "merged 3 shards" in said and f"'tiny-hubert0' now 7/8 done -> {out}" in said
    # every shard's first attempt was killed mid-shard (after 1 of its 2-3 items) and retried
    killed = [kill_marker(p, local_ray) for p in shard_paths(out, 3)]
    assert all(p.exists() for p in killed) and len({p.read_text() for p in killed}) == 3  # 3 worker pids
    assert not (tmp_path / "feats.h5.shards" / "shard-0-of-3.h5").exists()

    whole = tmp_path / "whole.h5"
    one_process_reference(wavs, labels, model, whole, threads=1)  # a Ray task of 1 CPU: 1 thread
    assert_identical(out, whole)
    with StoreReader(out) as r:
        assert r.items["id"].tolist() == [rel for rel, _, _ in FILES] + ["c/broken.wav"]


def test_ray_without_shards_on_a_cpu_cluster_is_one_line(local_ray, tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    result = CliRunner().invoke(app, ["extract", str(tmp_path), "-m", "m", "--engine", "ray"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert ("--engine ray on a cluster without GPUs needs --shards (its 2 CPUs could run 2 shards)"
            in result.output)
