"""First contact as a user makes it: the README's commands as typed, the Python API, and the
cheap checks that must fail before a model is loaded."""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import embedx
from embedx.cli import app
from embedx.errors import ConfigError, DataError
from tests.clirun import run_embedx

README = Path(__file__).resolve().parents[1] / "README.md"


_cli = run_embedx


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """`embedx synth demo`, then the two mission commands exactly as a user types them."""
    root = tmp_path_factory.mktemp("user")
    made = _cli("synth", "demo", "--items", "24", "--speakers", "6", cwd=root)
    assert made.returncode == 0, made.stderr
    folder = root / "demo"
    extracted = _cli("extract", "--model", "tiny-hubert", "wavs/", cwd=folder)
    assert extracted.returncode == 0, extracted.stderr
    assert "labels.csv" in extracted.stderr  # it says where the labels came from
    return folder


def test_mission_commands_work_as_typed(demo):
    assert (demo / "feats.h5").is_file()  # the default store name fit reads
    fitted = _cli("fit", "--features", "feats.h5", "--bootstrap", "50", cwd=demo)
    assert fitted.returncode == 0, fitted.stderr
    # grouped by the speaker column by default, said in one line and in the report
    said = [line for line in fitted.stderr.splitlines() if "speaker-independent" in line]
    assert len(said) == 1 and "'speaker'" in said[0] and "--no-group" in said[0]
    report = (demo / "results" / "report.md").read_text()
    assert "grouped by the items' `speaker` column" in report
    summary = pd.read_csv(demo / "results" / "summary.csv")
    assert len(summary) == 5  # the tiny model's layers 0..4, logreg

    assert (demo / "results" / "model.skops").is_file()
    # a second study into the same folder is refused (a stale model.skops would be wrong) ...
    again = _cli("fit", "--features", "feats.h5", "--bootstrap", "0", "--no-save-model", cwd=demo)
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1
    assert "holds another study's results" in again.stderr and "--overwrite" in again.stderr
    # ... unless --overwrite, which removes the old study's files: no model.skops is left
    (demo / "results" / "mine.txt").write_text("a user's own file stays")
    replaced = _cli("fit", "--bootstrap", "0", "--no-save-model", "--no-group", "--overwrite", cwd=demo)
    assert replaced.returncode == 0, replaced.stderr
    assert not (demo / "results" / "model.skops").exists()
    assert (demo / "results" / "mine.txt").exists()
    assert "speaker-independent" not in replaced.stderr
    assert "grouped by" not in (demo / "results" / "report.md").read_text()


def test_group_and_no_group_contradict(demo):
    res = CliRunner().invoke(app, ["fit", "-f", str(demo / "feats.h5"), "--group", "speaker",
                                   "--no-group", "-o", str(demo / "r2")])
    assert res.exit_code != 0 and "contradict" in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("make_bad, message", [
    (lambda d: (d / "afile").write_text("x") and d / "afile", "is a file"),
    (lambda d: (d / "afile2").write_text("x") and d / "afile2" / "results", "which is a file"),
])
def test_fit_output_is_checked_before_the_study(demo, tmp_path, make_bad, message):
    res = CliRunner().invoke(app, ["fit", "-f", str(demo / "feats.h5"), "-o", str(make_bad(tmp_path))])
    assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_no_label_column_names_the_fixes(tmp_path, tiny_model):
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    import soundfile as sf

    for i in range(4):
        sf.write(wavs / f"{i}.wav", np.random.default_rng(i).standard_normal(8000) * 0.1, 16000)
    embedx.extract(wavs, tmp_path / "feats.h5", model=str(tiny_model("hubert")), workers=0,
                   progress=False)
    with pytest.raises(DataError) as err:
        embedx.fit(tmp_path / "feats.h5", output=None, progress=False)
    message = str(err.value)
    assert "no label column 'label'" in message
    # the Python API reads its own arguments; the CLI its flags
    assert "labels='labels.csv'" in message and "manifest='labels.csv'" in message and "label='COLUMN'" in message
    assert "--labels labels.csv" not in message
    from embedx.cli import flag

    cli = err.value.render(flag)
    assert "--labels labels.csv" in cli and "--manifest labels.csv" in cli and "--label COLUMN" in cli


def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    """The README's API example, executed as written (in a scratch folder)."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README lost its API example"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)  # noqa: S102 - our own README
    result = scope["result"]
    assert result.group == "speaker" and {"report", "summary", "model"} <= set(result.files)
    assert scope["X"].shape == (len(scope["y"]), 32)
    assert (tmp_path / "demo-api" / "results" / "report.md").is_file()
    assert list(result.summary["rank"])[:1] == [1]


def test_api_names_mirror_the_cli(tmp_path):
    with pytest.raises(ConfigError, match="unknown extract option.*polling"):
        embedx.extract(tmp_path, tmp_path / "f.h5", model="x", polling="mean")

def test_the_api_names_are_plain_functions_and_no_module_is_callable():
    import inspect
    import types

    for name in ("extract", "fit", "similarity", "open"):
        function = getattr(embedx, name)
        assert inspect.isfunction(function) and function.__module__ == "embedx.api", name
        assert name in dir(embedx)
    for module in ("embedx.extraction.extract", "embedx.probing", "embedx.probing.study", "embedx.cka"):
        imported = importlib.import_module(module)  # importing a stage never rebinds the API names
        assert type(imported) is types.ModuleType and not callable(imported), module
    assert inspect.isfunction(embedx.fit) and inspect.isfunction(embedx.extract)
    with pytest.raises(AttributeError, match="no attribute 'fitt'"):
        embedx.fitt  # noqa: B018


@pytest.mark.parametrize("args, message", [
    (["--layers", "1-3"], "bad layer '1-3'"),
    (["--layers", "5:3"], "selects no layer"),
    (["--pooling", "mean,median"], "median"),
    (["--dtype", "float64"], "float64"),
    (["-o", "{tmp}"], "is a folder"),
    (["-o", "{tmp}/missing/f.h5"], "does not exist"),
    (["-o", "{tmp}/a_file/f.h5"], "is a file"),
    (["--config", "{tmp}/preset.yaml"], "unknown setting(s) polling"),
])
def test_typos_fail_before_the_model_loads(tmp_path, monkeypatch, args, message):
    """A typo must not cost a model download: the backend is never created."""
    import embedx.extraction.extract as stage1

    def no_model(*_a, **_k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(stage1, "create_backend", no_model)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "preset.yaml").write_text("polling: mean\n")
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    import soundfile as sf

    sf.write(wavs / "a.wav", np.zeros(8000, dtype=np.float32), 16000)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "f.h5")]
    res = CliRunner().invoke(app, ["extract", "--model", "org/not-downloaded", str(wavs), *args])
    assert res.exit_code != 0, res.output
    assert message in res.output and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only file system (a bind mount remounted ro): permission bits do not stop root,
    so this is the one way to test a folder nobody can write. Skipped where mounting is denied."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    (src / "inside").mkdir()
    ok = subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True).returncode == 0
    if ok and subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode:
        subprocess.run(["umount", str(ro)], capture_output=True)
        ok = False
    if not ok:
        pytest.skip("cannot make a read-only bind mount here")
    yield ro
    subprocess.run(["umount", str(ro)], capture_output=True)


def test_read_only_outputs_fail_in_one_line_before_work(read_only_folder, demo, monkeypatch):
    import embedx.extraction.extract as stage1

    monkeypatch.setattr(stage1, "create_backend", lambda *a, **k: pytest.fail("model loaded"))
    res = CliRunner().invoke(app, ["extract", "--model", "x/y", str(demo / "wavs"),
                                   "-o", str(read_only_folder / "f.h5")])
    assert res.exit_code != 0 and res.output.strip() == (
        f"embedx: store: cannot create {read_only_folder / 'f.h5'}: {read_only_folder} is on a read-only file system")
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(app, ["fit", "-f", str(demo / "feats.h5"),
                                   "-o", str(read_only_folder / "inside" / "results")])
    assert res.exit_code != 0 and "cannot be written" in res.output and "is on a read-only file system" in res.output
    assert len(res.output.strip().splitlines()) == 1
