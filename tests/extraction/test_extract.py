"""End to end: embedx extract against a direct transformers forward of each item alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from embedx.cli import app
from embedx.errors import ConfigError, StoreError
from embedx.extraction.audio import load
from embedx.extraction.config import ExtractConfig
from embedx.extraction.extract import extract
from embedx.store import StoreReader
from embedx.testing.synth import chirp, mixed_item, utterance

# lengths chosen so batches mix long and short items (and one item is shorter than 25 ms)
SPECS = [  # (name, seconds, sample rate, channels)
    ("a/long.wav", 2.3, 16000, 1),
    ("a/mid.flac", 1.1, 22050, 1),
    ("b/stereo44k.wav", 0.9, 44100, 2),
    ("b/short.wav", 0.31, 16000, 1),
    ("c/tiny.wav", 0.02, 16000, 1),
    ("c/eight.wav", 0.7, 8000, 1),
]


@pytest.fixture
def corpus(write_audio, tmp_path):
    rng = np.random.default_rng(1)
    for k, (rel, seconds, rate, channels) in enumerate(SPECS):
        wave = mixed_item(k, seconds, rate, rng)
        data = np.stack([wave, -0.5 * wave], axis=1) if channels == 2 else wave
        write_audio(f"wavs/{rel}", data, rate)
    return tmp_path / "wavs"


def direct_states(model_dir, path, span=None):
    """Hidden states of one item alone: the reference a padded batch must reproduce.

    With ``span=(start, stop)``, of that chunk of the (normalised) item alone.
    """
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    fe = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    wave = load(path, 16000)
    if fe.do_normalize:
        wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    if span is not None:
        wave = wave[span[0]:span[1]]
    if len(wave) < 400:  # the documented short-item policy: zero-pad to the minimum
        wave = np.pad(wave, (0, 400 - len(wave)))
    with torch.inference_mode():
        hs = model(torch.from_numpy(wave)[None], output_hidden_states=True).hidden_states
    return torch.stack(hs)[:, 0].numpy()  # (num_layers, 1, frames, dim) -> (num_layers, frames, dim)


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-8))


@pytest.mark.parametrize("family", ["hubert", "wav2vec2-large", "data2vec-audio"])
def test_stored_states_equal_each_item_alone(family, tiny_model, corpus, tmp_path):
    model_dir = tiny_model(family)
    out = tmp_path / "f.h5"
    config = ExtractConfig(model=str(model_dir), layers="all", poolings=("mean", "std", "last"),
                           frames=True, precision="fp32", device="cpu", batch_seconds=5.0,
                           workers=0, progress=False)
    summary = extract([str(corpus)], out, config)
    assert summary.processed == len(SPECS) and summary.failed == 0
    with StoreReader(out) as r:
        name = r.feature_sets()[0]
        spec = r.spec(name)
        items = r.items
        assert spec.layers == tuple(range(spec.layers[-1] + 1))
        for idx, path in enumerate(items["path"]):
            ref = direct_states(model_dir, path)  # (num_layers, frames, dim)
            frames = r.frames(name, idx)  # (frames, num_layers, dim)
            assert frames.shape == (ref.shape[1], ref.shape[0], ref.shape[2])
            assert rel_err(frames.transpose(1, 0, 2), ref) < 1e-4, items["id"][idx]
            for layer in spec.layers:
                assert rel_err(r.pooled(name, "mean", layer)[idx], ref[layer].mean(0)) < 1e-4
                assert rel_err(r.pooled(name, "std", layer)[idx], ref[layer].std(0)) < 1e-4
                assert rel_err(r.pooled(name, "last", layer)[idx], ref[layer][-1]) < 1e-4


def test_layers_subset_pooled_only_and_metadata(tiny_model, corpus, tmp_path):
    model_dir = tiny_model("hubert")
    out = tmp_path / "f.h5"
    config = ExtractConfig(model=str(model_dir), name="hub", layers="0,-1", poolings=("mean",),
                           dtype="float16", device="cpu", workers=0, progress=False)
    extract([str(corpus)], out, config)
    with StoreReader(out) as r:
        spec = r.spec("hub")
        assert spec.layers == (0, 4) and spec.dtype == "float16" and not spec.frames
        assert spec.config["layers"] == "0,4" and spec.config["model"] == str(model_dir)
        assert spec.attrs["model_type"] == "hubert"
        x = r.pooled("hub", "mean", 4)
        assert x.shape == (len(SPECS), spec.dim) and x.dtype == np.float32
        ref = direct_states(model_dir, r.items["path"][0])[4].mean(0)
        assert rel_err(x[0], ref) < 2e-3  # float16 storage


def test_resume_after_interruption_equals_uninterrupted_run(tiny_model, corpus, tmp_path, monkeypatch):
    from embedx.backends.hf import HFBackend

    model_dir = tiny_model("hubert")

    def cfg():
        return ExtractConfig(model=str(model_dir), layers="all", poolings=("mean",), frames=True,
                             device="cpu", workers=0, progress=False, batch_seconds=1.5)

    extract([str(corpus)], tmp_path / "full.h5", cfg())

    calls = {"n": 0}
    original = HFBackend.forward

    def flaky(self, waves, layers):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C does mid-run
        return original(self, waves, layers)

    monkeypatch.setattr(HFBackend, "forward", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract([str(corpus)], tmp_path / "part.h5", cfg())
    with StoreReader(tmp_path / "part.h5") as r:
        partial = r.done(r.feature_sets()[0]).sum()
    assert 0 < partial < len(SPECS)
    monkeypatch.setattr(HFBackend, "forward", original)
    summary = extract([str(corpus)], tmp_path / "part.h5", cfg())
    assert summary.processed == len(SPECS) - partial

    with StoreReader(tmp_path / "full.h5") as a, StoreReader(tmp_path / "part.h5") as b:
        name = a.feature_sets()[0]
        assert a.items["id"].tolist() == b.items["id"].tolist()
        assert b.done(name).all()
        for layer in a.spec(name).layers:
            np.testing.assert_array_equal(a.pooled(name, "mean", layer), b.pooled(name, "mean", layer))
        for i in range(a.num_items):
            np.testing.assert_array_equal(a.frames(name, i), b.frames(name, i))

    again = extract([str(corpus)], tmp_path / "part.h5", cfg())
    assert again.nothing_to_do and "nothing to do" in again.line()


def test_changed_settings_are_refused_then_overwritten(tiny_model, corpus, tmp_path):
    model_dir = tiny_model("hubert")
    out = tmp_path / "f.h5"
    base = dict(model=str(model_dir), device="cpu", workers=0, progress=False)
    extract([str(corpus)], out, ExtractConfig(layers="all", **base))
    with pytest.raises(StoreError, match="layers") as refused:
        extract([str(corpus)], out, ExtractConfig(layers="0,2", **base))
    # each difference once (layers is in the spec and in the config), and both ways out named
    assert str(refused.value).count("layers") == 1
    # the Python API names its own arguments; the CLI names its flags (test_messages)
    assert "overwrite=True" in str(refused.value) and "name='NAME'" in str(refused.value)
    assert "--" not in str(refused.value)
    summary = extract([str(corpus)], out, ExtractConfig(layers="0,2", overwrite=True, **base))
    assert summary.processed == len(SPECS)


def test_resume_of_a_store_written_with_the_old_resampler_is_refused(tiny_model, corpus, tmp_path):
    """Stores from embedx < 0.2 (torchaudio resampling) record no resampler: a resume into them
    would mix two resamplers' values, so it is refused in one line naming --overwrite."""
    import h5py
    import yaml

    out = tmp_path / "f.h5"
    base = dict(model=str(tiny_model("hubert")), device="cpu", workers=0, progress=False)
    extract([str(corpus)], out, ExtractConfig(**base))
    with StoreReader(out) as r:
        name = r.feature_sets()[0]
        assert r.spec(name).config["resampler"] == "soxr-hq"
    with h5py.File(out, "r+") as f:  # rewrite the set's config as embedx 0.1 stored it
        attrs = f[f"features/{name}"].attrs
        config = yaml.safe_load(attrs["config"])
        del config["resampler"]
        attrs["config"] = yaml.safe_dump(config)
    res = CliRunner().invoke(app, ["extract", "--model", base["model"], str(corpus), "-o", str(out),
                                   "--device", "cpu", "--quiet"])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1
    assert "config.resampler: stored 'torchaudio'" in res.output
    assert "Use --overwrite to replace it, or --name NAME to store" in res.output
    again = extract([str(corpus)], out, ExtractConfig(overwrite=True, **base))
    assert again.processed == len(SPECS)


def test_bad_files_are_recorded_and_the_run_continues(tiny_model, corpus, tmp_path):
    (corpus / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    (corpus / "text.wav").write_text("not audio at all")
    config = ExtractConfig(model=str(tiny_model("hubert")), device="cpu", workers=0, progress=False,
                           short="fail")
    summary = extract([str(corpus)], tmp_path / "f.h5", config)
    # the two non-audio files, and the 20 ms item under --short fail
    assert summary.failed == 3 and summary.processed == len(SPECS) - 1
    with StoreReader(tmp_path / "f.h5") as r:
        failed = r.failed()
        assert sorted(failed["id"]) == ["broken.wav", "c/tiny.wav", "text.wav"]
        assert "too short" in failed.set_index("id").loc["c/tiny.wav", "message"]
        assert not r.done(r.feature_sets()[0])[r.items["id"].tolist().index("text.wav")]


def test_cli_extract_with_manifest_then_info(tiny_model, corpus, tmp_path):
    rows = [{"path": rel, "label": ["neutral", "happy"][k % 2], "speaker": f"s{k % 3}"}
            for k, (rel, *_rest) in enumerate(SPECS)]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "feats.h5"
    runner = CliRunner()
    args = ["extract", "--model", str(tiny_model("wavlm")), "--layers", "0,2", "--pooling", "mean,std",
            "--manifest", str(tmp_path / "labels.csv"), str(corpus), "-o", str(out), "--workers", "1",
            "--quiet"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "extracted 6 items" in res.output
    with StoreReader(out) as r:
        assert r.items["label"].tolist() == [row["label"] for row in rows]
        assert r.items["id"].tolist() == [row["path"] for row in rows]
        config = r.spec(r.feature_sets()[0]).config
        assert config["poolings"] == ["mean", "std"] and config["layers"] == "0,2"  # as given
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "nothing to do" in res.output
    res = runner.invoke(app, ["info", str(out)])
    assert res.exit_code == 0, res.output
    assert "neutral (3), happy (3)" in res.output, res.output  # the label column's counts
    assert "[0, 2] (2 layers)" in res.output


@pytest.mark.parametrize("args,message", [
    (["--layers", "99"], "layer 99 out of range"),
    (["--pooling", "median"], "unknown pooling 'median'"),
    (["--dtype", "int8"], "--dtype 'int8'"),
    (["--precision", "fp8"], "fp8"),
])
def test_cli_errors_are_one_line(tiny_model, corpus, tmp_path, args, message):
    res = CliRunner().invoke(app, ["extract", "--model", str(tiny_model("hubert")), str(corpus),
                                   "-o", str(tmp_path / "f.h5"), "--quiet", *args])
    assert res.exit_code != 0
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_cli_missing_model_is_one_line(tmp_path, corpus):
    res = CliRunner().invoke(app, ["extract", "--model", str(tmp_path / "nope"), str(corpus), "-o",
                                   str(tmp_path / "f.h5"), "--quiet"])
    assert res.exit_code != 0 and "cannot load model" in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("family", ["hubert", "wav2vec2-large"])
def test_long_items_run_in_chunks_that_tile_the_frames(family, tiny_model, write_audio, tmp_path):
    from embedx.extraction.batching import chunk_spans

    rng = np.random.default_rng(3)
    long_path = write_audio("w/long.wav", utterance("happy", 150, 1.0, 3.3, 16000, rng))
    write_audio("w/short.wav", chirp(200, 900, 0.6, 16000))
    model_dir = tiny_model(family)
    names = ("mean", "std", "max", "min", "first", "last")
    config = ExtractConfig(model=str(model_dir), poolings=names, frames=True, max_chunk_seconds=1.0,
                           batch_seconds=2.5, device="cpu", workers=0, progress=False)
    summary = extract([str(tmp_path / "w")], tmp_path / "f.h5", config)
    assert summary.processed == 2
    n = 52800  # 3.3 s at 16 kHz
    spans = chunk_spans(n, 16000, hop=320, receptive=400)
    assert len(spans) == 4
    # every chunk alone, stitched in order: the reference for the stored frames
    ref = np.concatenate([direct_states(model_dir, long_path, (s.start, s.stop)) for s in spans], axis=1)
    assert ref.shape[1] == (n - 400) // 320 + 1
    with StoreReader(tmp_path / "f.h5") as r:
        name = r.feature_sets()[0]
        idx = r.items["id"].tolist().index("long.wav")
        frames = r.frames(name, idx).transpose(1, 0, 2)  # (frames, layers, dim) -> (layers, frames, dim)
        assert frames.shape == ref.shape
        assert rel_err(frames, ref) < 1e-4
        reductions = {"mean": lambda x: x.mean(0), "std": lambda x: x.std(0), "max": lambda x: x.max(0),
                      "min": lambda x: x.min(0), "first": lambda x: x[0], "last": lambda x: x[-1]}
        for layer in r.spec(name).layers:
            for p, fn in reductions.items():
                assert rel_err(r.pooled(name, p, layer)[idx], fn(ref[layer])) < 1e-4, (p, layer)
        assert r.spec(name).config["max_chunk_seconds"] == 1.0


# --- several feature sources in one store (issue #4) --------------------------------------------


def test_several_feature_sets_in_one_file_then_fusion(tiny_model, corpus, tmp_path):
    rows = [{"path": rel, "label": ["neutral", "happy"][k % 2]} for k, (rel, *_rest) in enumerate(SPECS)]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "feats.h5"
    runner = CliRunner()
    common = ["--manifest", str(tmp_path / "labels.csv"), str(corpus), "-o", str(out), "--workers", "0",
              "--quiet"]
    res = runner.invoke(app, ["extract", "--model", str(tiny_model("hubert")), "--name", "hub",
                              "--layers", "0,2", *common])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["extract", "--opensmile", "egemaps", *common])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["extract", "--opensmile", "egemaps", "--opensmile-level", "lld", "--frames",
                              "--pooling", "mean,std", *common])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["extract", "--opensmile", "eGeMAPSv02", *common])  # same set, resumed
    assert res.exit_code == 0 and "nothing to do" in res.output

    res = runner.invoke(app, ["info", str(out)])
    assert res.exit_code == 0
    for set_name in ("hub", "egemaps", "egemaps-lld"):
        assert f"feature set '{set_name}'" in res.output
    with StoreReader(out) as r:
        assert r.feature_sets() == ["egemaps", "egemaps-lld", "hub"]
        assert all(r.done(s).all() for s in r.feature_sets())
        egemaps = r.spec("egemaps")
        assert egemaps.backend == "opensmile" and len(egemaps.feature_names) == 88
        assert egemaps.config["backend_options"] == {"feature_set": "eGeMAPSv02", "level": "functionals"}
        assert "backend_options" not in r.spec("hub").config
        assert r.spec("egemaps-lld").frames and r.spec("egemaps-lld").frame_rate == 100.0
        rebuilt = ExtractConfig(**r.spec("egemaps-lld").config)
        assert rebuilt.backend_options == {"feature_set": "eGeMAPSv02", "level": "lld"}

    # stage 2 fuses a model layer with eGeMAPS
    from embedx.probing.data import load_dataset

    data = load_dataset(out, label="label", sets=["hub@2", "egemaps"], concat=True)
    assert [c.name for c in data.configs] == ["hub@2/mean+egemaps@0/mean"]
    assert data.X["hub@2/mean+egemaps@0/mean"].shape == (len(SPECS), 32 + 88)


def test_other_items_into_the_same_file_are_refused_naming_the_difference(tiny_model, corpus, tmp_path,
                                                                          write_audio):
    out = tmp_path / "f.h5"
    base = dict(device="cpu", workers=0, progress=False)
    extract([str(corpus)], out, ExtractConfig(model=str(tiny_model("hubert")), **base))
    write_audio("other/x.wav", chirp(200, 900, 0.5, 16000))
    opensmile = dict(backend="opensmile", backend_options={"feature_set": "egemaps"}, **base)
    with pytest.raises(StoreError, match=r"holds 6 items but 1 were requested"):
        extract([str(tmp_path / "other")], out, ExtractConfig(**opensmile))
    runner = CliRunner()
    res = runner.invoke(app, ["extract", "--opensmile", "egemaps", str(corpus / "a"), str(corpus / "c"),
                              str(corpus / "b"), "-o", str(out), "--quiet"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "items differ" in res.output and "first at row" in res.output
    with StoreReader(out) as r:
        assert r.feature_sets() == [r.feature_sets()[0]]  # nothing was added


@pytest.mark.parametrize("args,message", [
    (["--opensmile", "mfcc"], "unknown openSMILE feature set 'mfcc'"),
    (["--opensmile", "egemaps", "--opensmile-level", "deltas"], "unknown openSMILE level 'deltas'"),
    (["--opensmile", "egemaps", "--frames"], "--frames needs frame-level features"),
    (["--opensmile", "egemaps", "--model", "x"], "--opensmile and --model are exclusive"),
])
def test_cli_opensmile_errors_are_one_line(corpus, tmp_path, args, message):
    res = CliRunner().invoke(app, ["extract", str(corpus), "-o", str(tmp_path / "f.h5"), "--quiet", *args])
    assert res.exit_code != 0
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_preset_fills_untyped_options_and_typed_options_win(tiny_model, corpus, tmp_path):
    model_dir = tiny_model("hubert")
    preset = tmp_path / "p.yaml"
    preset.write_text(f"model: {model_dir}\nlayers: '0,1'\npoolings: [mean, max]\ndtype: float16\n")
    out = tmp_path / "f.h5"
    res = CliRunner().invoke(app, ["extract", "--config", str(preset), "--layers", "2", str(corpus), "-o", str(out),
                                   "--quiet", "--workers", "0"])
    assert res.exit_code == 0, res.output
    with StoreReader(out) as r:
        spec = r.spec(r.feature_sets()[0])
        assert spec.layers == (2,) and spec.poolings == ("mean", "max") and spec.dtype == "float16"
    preset.write_text("model: x\nlayer: all\n")
    res = CliRunner().invoke(app, ["extract", "--config", str(preset), str(corpus), "-o", str(out), "--quiet"])
    assert res.exit_code != 0 and "unknown setting(s) layer" in res.output and "accepted:" in res.output


def test_shipped_presets_are_valid():
    from importlib.resources import files

    from embedx.extraction.config import ExtractConfig, load_preset

    presets = [p for p in files("embedx.configs").iterdir() if p.name.endswith(".yaml") and p.name != "grids.yaml"]
    assert len(presets) >= 4
    for p in presets:
        ExtractConfig(**load_preset(str(p))).validate()


def test_a_packaged_preset_is_found_by_name_and_a_local_file_wins(tmp_path, monkeypatch):
    from embedx.extraction.config import load_preset, packaged_presets

    presets = packaged_presets()
    assert {"hubert-base", "wavlm-base-plus", "audeering-emotion", "egemaps"} <= set(presets)
    monkeypatch.chdir(tmp_path)
    by_name = load_preset("hubert-base")
    assert by_name == load_preset(str(presets["hubert-base"])) == load_preset("hubert-base.yaml")
    assert by_name["model"] == "facebook/hubert-base-ls960"
    (tmp_path / "hubert-base.yaml").write_text("dtype: float16\n")  # a user's own file of that name
    assert load_preset("hubert-base.yaml") == {"dtype": "float16"}
    with pytest.raises(ConfigError, match=r"no preset file 'hubrt-base'.*packaged: audeering-emotion"):
        load_preset("hubrt-base")

def _embedx(*args, timeout=300):
    """The real command line in a fresh process (fd 2 as a terminal would get it)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "embedx", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_an_all_failed_run_exits_1_in_one_line_and_the_decoders_chatter_stays_in_the_store(
        tiny_model, tmp_path):
    import soundfile as sf

    from embedx.errors import NothingExtractedError

    wavs = tmp_path / "wavs"
    wavs.mkdir()
    (wavs / "a.mp3").write_text("a text file, not MP3\n")  # fails reading its header (main process)
    stages = {"a.mp3": "probe"}
    if "MP3" in sf.available_formats():  # a damaged MP3 whose header reads: fails in a decoding worker
        sf.write(wavs / "b.mp3", chirp(200, 2000, 2.0, 16000), 16000, format="MP3")
        blob = bytearray((wavs / "b.mp3").read_bytes())
        blob[len(blob) // 2:len(blob) // 2 + 200] = bytes(200)
        (wavs / "b.mp3").write_bytes(bytes(blob))
        stages["b.mp3"] = "decode"
    out = tmp_path / "f.h5"
    model = tiny_model("hubert")
    res = _embedx("extract", "--model", model, wavs, "-o", out, "--quiet")  # default workers
    assert res.returncode == 1, res.stderr
    n = len(stages)
    who = "the only item" if n == 1 else f"all {n} items"
    assert res.stdout == "" and res.stderr.startswith(f"embedx: error: {who} of '{model.name}' failed (")
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr  # one line: no chatter, no notes
    assert "1 could not be read, first: a.mp3: cannot read audio header:" in res.stderr
    assert f"nothing was written; see `embedx info {out} --failed`" in res.stderr
    assert "nan" not in res.stderr
    with StoreReader(out) as r:
        failed = r.failed().set_index("id")
        assert dict(failed["stage"]) == stages
        assert all("Illegal Audio-MPEG-Header" in m for m in failed["message"])  # the decoder's words
        assert "does not exist" not in failed.loc["a.mp3", "message"]
        assert not r.done(model.name).any()
    # the same command again: still nothing, still exit 1, and how to retry
    again = _embedx("extract", "--model", model, wavs, "-o", out, "--quiet")
    assert again.returncode == 1 and "failed in an earlier run (" in again.stderr
    assert "--retry-failed retries them" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    # the Python API agrees: a typed error carrying the summary
    config = ExtractConfig(model=str(model), device="cpu", workers=0, progress=False, retry_failed=True)
    with pytest.raises(NothingExtractedError, match=rf"{who} of '{model.name}' failed \(") as err:
        extract([str(wavs)], out, config)
    assert err.value.exit_code == 1
    assert (err.value.summary.processed, err.value.summary.failed, err.value.summary.failed_total) == (0, n, n)


def test_store_in_a_kernel_file_system_is_refused_naming_it(tiny_model, corpus):
    import os

    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    res = CliRunner().invoke(app, ["extract", "--model", str(tiny_model("hubert")), str(corpus),
                                   "-o", "/proc/x.h5", "--quiet"])
    assert res.exit_code == 2
    assert res.output.strip() == ("embedx: store: cannot create /proc/x.h5: /proc is on the kernel's proc "
                                  "file system, which cannot hold ordinary files; choose a folder on a disk")
