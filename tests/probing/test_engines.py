"""The study's joblib grid on other engines: a (local) Dask cluster gives loky's results."""

from __future__ import annotations

import importlib
import importlib.util

import pandas as pd
import pytest
from typer.testing import CliRunner

import embedx
from embedx.cli import app
from embedx.errors import ConfigError
from embedx.probing import engines
from embedx.probing.data import load_dataset
from embedx.probing.engines import check_engine, engine
from embedx.probing.study import StudySettings, run_study

FAST = {"models": ["logreg", "ridge"], "n_boot": 100, "threads": 1, "seed": 3}


def _comparable(result) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study's tables without timings."""
    return tuple(df.drop(columns=[c for c in df.columns if "seconds" in c])
                 for df in (result.results, result.summary))


@pytest.fixture
def local_dask():
    """A local cluster of worker processes, as `embedx fit --engine dask` starts by default."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        yield cluster


def test_dask_cluster_gives_the_loky_results(toy_store, local_dask):
    ds = load_dataset(toy_store(), label="label", group="speaker", layers="2,3")
    loky = run_study(ds, StudySettings(backend="loky", jobs=2, **FAST))
    dask = run_study(ds, StudySettings(backend="dask", scheduler=local_dask.scheduler_address, **FAST))
    for a, b in zip(_comparable(loky), _comparable(dask), strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert loky.best == dask.best
    for key, pred in loky.predictions.items():
        pd.testing.assert_series_equal(pd.Series(pred), pd.Series(dask.predictions[key]))
    # the fits really ran on the cluster's worker processes, not in this one
    assert any(p.startswith("batch_of_run_task") for p in local_dask.scheduler.task_prefixes)
    import os

    from distributed import Client
    with Client(local_dask) as client:
        pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids


def _worker_pid(_i):
    """Where a joblib task ran (module level, so worker processes can unpickle it)."""
    import os

    from distributed import get_worker
    return get_worker().address, os.getpid()


def test_engine_starts_and_stops_a_local_dask_cluster():
    """The default `--engine dask` without a scheduler: worker processes, stopped afterwards."""
    import os

    pytest.importorskip("distributed")
    from joblib import Parallel, delayed

    with engine("dask", jobs=2) as return_as:
        assert return_as == "generator_unordered"
        where = set(Parallel()(delayed(_worker_pid)(i) for i in range(8)))
    addresses = {a for a, _ in where}
    pids = {p for _, p in where}
    assert 1 <= len(addresses) <= 2 and all(a.startswith("tcp://") for a in addresses)
    assert os.getpid() not in pids
    for pid in pids:  # the cluster's processes are gone once the block ends
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_loky_engine_is_joblib_parallel_config():
    from joblib import Parallel, delayed

    with engine("loky", jobs=2) as return_as:
        assert return_as == "generator_unordered"
        assert Parallel()(delayed(abs)(-i) for i in range(3)) == [0, 1, 2]
    # pool-based backends (multiprocessing; ray's is one too) cannot stream results
    with engine("multiprocessing", jobs=2) as return_as:
        assert return_as == "list"


def test_scheduler_needs_a_cluster_engine():
    with pytest.raises(ConfigError, match=r"scheduler 'tcp://h:8786' is for a cluster; it needs "
                                          r"engine='dask' or ray, not 'loky'"):
        check_engine("loky", "tcp://h:8786")


def test_missing_extra_names_the_install_command(monkeypatch):
    real = importlib.import_module

    def fake(name, *args):
        if name in ("distributed", "ray.util.joblib"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(engines.importlib, "import_module", fake)
    for backend in ("dask", "ray"):
        with pytest.raises(ConfigError) as err:
            check_engine(backend)
        assert str(err.value) == f"engine={backend!r} needs the optional extra: pip install 'embedx[{backend}]'"
    check_engine("loky")


def test_unreachable_scheduler_is_one_line(monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(engines, "CONNECT_TIMEOUT", "0.5s")
    with pytest.raises(ConfigError, match=r"scheduler 'tcp://127.0.0.1:9': cannot reach the dask scheduler"):
        with engine("dask", scheduler="tcp://127.0.0.1:9"):
            pass


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="ray is installed")
def test_cli_fit_without_ray_says_what_to_install(toy_store, tmp_path):
    result = CliRunner().invoke(app, ["fit", "-f", str(toy_store()), "--group", "speaker", "--engine", "ray",
                                      "-o", str(tmp_path / "res"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.output == "embedx: invalid option: --engine ray needs the optional extra: pip install 'embedx[ray]'\n"


def test_fit_backend_is_the_old_spelling_of_engine(toy_store, tmp_path):
    """`fit --backend` (renamed --engine) works for one more release, with one line on stderr."""
    store = toy_store()
    args = ["fit", "-f", str(store), "--group", "speaker", "--bootstrap", "0", "--no-save-model", "--quiet"]
    old = CliRunner().invoke(app, [*args, "--backend", "threading", "-o", str(tmp_path / "old")])
    new = CliRunner().invoke(app, [*args, "--engine", "threading", "-o", str(tmp_path / "new")])
    assert old.exit_code == 0 and new.exit_code == 0, old.output + new.output
    note = "embedx: --backend is now --engine; the old spelling goes in the next release"
    assert old.stderr.splitlines() == [note] and note not in new.output
    timeless = [pd.read_csv(tmp_path / d / "results.csv").filter(regex="^(?!.*seconds)") for d in ("old", "new")]
    assert timeless[0].equals(timeless[1])
    # the old spelling's value is the one used
    unknown = CliRunner().invoke(app, [*args, "--backend", "nope", "-o", str(tmp_path / "nope")])
    assert unknown.exit_code == 2 and "unknown --engine 'nope'; accepted: loky, threading" in unknown.output
    both = CliRunner().invoke(app, [*args, "--backend", "threading", "--engine", "sequential",
                                    "-o", str(tmp_path / "both")])
    assert both.exit_code == 2 and "--backend threading and --engine sequential contradict" in both.output
    assert "--backend" not in CliRunner().invoke(app, ["fit", "--help"]).output  # hidden

    with pytest.warns(DeprecationWarning, match=r"embedx\.fit\(backend=\.\.\.\) is now engine=\.\.\."):
        result = embedx.fit(store, output=None, group="speaker", bootstrap=0, progress=False,
                            backend="threading")
    cli = pd.read_csv(tmp_path / "new" / "summary.csv")
    column = f"{result.metric}_pooled"
    assert list(result.summary["config"]) == list(cli["config"])
    assert result.summary[column].to_numpy() == pytest.approx(cli[column].to_numpy())
    with pytest.raises(TypeError, match="unexpected keyword argument 'engnie'"):
        embedx.fit(store, output=None, engnie="loky")


def test_cli_fit_on_ray_gives_the_loky_results_on_the_demo_store(local_ray, tmp_path):
    """`embedx fit --engine ray` on a local Ray (started by the test, CPU only) equals loky,
    table for table, on the built-in example's store."""
    from embedx.extraction.config import ExtractConfig
    from embedx.extraction.extract import extract
    from embedx.testing.synth import make_example

    example = make_example(tmp_path / "demo", num_items=24, num_speakers=6)
    store = tmp_path / "feats.h5"
    extract([str(example.audio_dir)], store, ExtractConfig(model=str(example.model_dir), workers=0,
                                                           progress=False))
    args = ["fit", "-f", str(store), "--models", "logreg,ridge", "--bootstrap", "200", "--quiet"]
    loky = CliRunner().invoke(app, [*args, "--engine", "loky", "--jobs", "2", "-o", str(tmp_path / "loky")])
    ray = CliRunner().invoke(app, [*args, "--engine", "ray", "--jobs", "2", "-o", str(tmp_path / "ray")])
    assert loky.exit_code == 0 and ray.exit_code == 0, loky.output + ray.output
    for table in ("results.csv", "summary.csv"):
        a, b = (pd.read_csv(tmp_path / d / table) for d in ("loky", "ray"))
        assert len(a) >= 10  # 5 layers x 2 models
        pd.testing.assert_frame_equal(a.filter(regex="^(?!.*seconds)"), b.filter(regex="^(?!.*seconds)"))
    assert loky.stdout.replace("loky", "ray") == ray.stdout  # the headline and what was written

    import os

    from joblib import Parallel, delayed

    with engine("ray", jobs=2) as return_as:  # the fits run in Ray's worker processes
        assert return_as == "list"
        pids = set(Parallel()(delayed(os.getpid)() for _ in range(4)))
    assert pids and os.getpid() not in pids
