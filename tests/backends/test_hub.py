"""Where ``--model`` points: a misspelt local folder is one line about the folder, not the hub."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from embedx.backends.hub import check_local_model, looks_local
from embedx.errors import ModelError
from tests.clirun import run_embedx


@pytest.fixture
def here(tmp_path):
    """A working directory as `embedx synth demo` leaves it: demo/tiny-hubert and demo/wavs."""
    (tmp_path / "demo" / "tiny-hubert").mkdir(parents=True)
    (tmp_path / "demo" / "tiny-hubert" / "config.json").write_text("{}")
    wavs = tmp_path / "demo" / "wavs"
    wavs.mkdir()
    sf.write(wavs / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    return tmp_path


def test_a_misspelt_local_model_folder_is_one_line_naming_the_close_folder(here):
    for model, cwd, close in (("demo/tiny-hubrt", here, "demo/tiny-hubert"),
                              ("./tiny-hubrt", here / "demo", "./tiny-hubert")):
        done = run_embedx("extract", "--model", model, "wavs/" if cwd != here else "demo/wavs/", cwd=cwd)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        # nothing scanned first (no "40 items" line), no hub talk
        assert lines == [f"embedx: cannot load model: --model {model}: no such model folder; "
                         f"did you mean {close}?"], done.stderr
        assert "items" not in done.stdout


def test_a_local_path_with_nothing_close_says_what_a_model_folder_is(here):
    done = run_embedx("extract", "--model", "demo/zzz", "demo/wavs/", cwd=here)
    assert done.returncode == 2
    assert done.stderr.strip() == ("embedx: cannot load model: --model demo/zzz: no such model folder; give "
                                   "a folder that holds the model's config.json, or a hub id (owner/name)")


def test_a_hub_id_without_a_local_folder_of_its_owner_is_still_asked_of_the_hub(here, monkeypatch):
    assert not looks_local("facebook/hubert-bas")  # no folder facebook/ here (cwd is elsewhere)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub's answer without the network
    done = run_embedx("extract", "--model", "facebook/hubert-bas", "demo/wavs/", cwd=here)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("embedx: cannot load model: 'facebook/hubert-bas' is not in the Hugging Face "
                           "cache and HF_HUB_OFFLINE=1 is set"), done.stderr


def test_looks_local_reads_a_first_component_that_is_a_folder_here(here, monkeypatch):
    monkeypatch.chdir(here)
    assert looks_local("demo/tiny-hubrt") and looks_local("./x") and looks_local("~/x")
    assert not looks_local("facebook/hubert-base-ls960") and not looks_local("hubert")
    check_local_model("demo/tiny-hubert")  # exists: no error
    check_local_model("facebook/hubert-base-ls960")  # a hub id: not this function's business
    with pytest.raises(ModelError, match=r"model='demo/tiny-hubrt': no such model folder; did you mean "
                                         r"demo/tiny-hubert\?"):
        check_local_model("demo/tiny-hubrt")
    with pytest.raises(ModelError, match="no such model folder"):  # the Python API takes a Path
        check_local_model(here / "demo" / "tiny-hubrt")
    with pytest.raises(ModelError, match="is a file, not a model folder"):
        check_local_model("demo/wavs/a.wav")


def test_a_bare_misspelt_name_still_asks_the_hub_but_names_the_close_local_folder(here, monkeypatch):
    # a bare name may be a hub id, so it is asked of the hub; the failure names what is close here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    done = run_embedx("extract", "--model", "tiny-hubrt", "wavs/", cwd=here / "demo")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("embedx: cannot load model: 'tiny-hubrt' is not in the Hugging Face cache")
    assert last.endswith("(a local folder of a close name is here: ./tiny-hubert)"), done.stderr
    done = run_embedx("extract", "--model", "zzz-qqq", "wavs/", cwd=here / "demo")  # nothing close: no hint
    assert "close name" not in done.stderr and done.returncode == 2
