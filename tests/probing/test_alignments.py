"""Alignments (TextGrid, CTM, RTTM, CSV) read against a store's items, frame times per family,
frame labels, and the example corpus's TextGrids."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedx.errors import DataError
from embedx.probing.alignments import (
    END_TOLERANCE,
    Alignments,
    frame_centres,
    frame_labels,
    frame_timing,
    read_alignments,
)
from embedx.store import FeatureSetSpec

# item ids as a store holds them: relative paths with their extension; stem "a" is shared
ITEMS = pd.DataFrame({
    "id": ["spk00/a.wav", "spk00/b.wav", "spk01/a.wav", "spk01/c.flac"],
    "path": ["/data/spk00/a.wav", "/data/spk00/b.wav", "/data/spk01/a.wav", "/data/spk01/c.flac"],
    "duration": [2.0, 1.5, 1.0, 3.0],
})


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def textgrid(xmax: float, tiers: list[tuple[str, str, list[tuple[float, float, str]]]]) -> str:
    """A long-format Praat TextGrid, written out by hand (not by praatio)."""
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0",
             f"xmax = {xmax}", "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for k, (kind, name, entries) in enumerate(tiers, 1):
        lines += [f"    item [{k}]:", f'        class = "{kind}"', f'        name = "{name}"',
                  "        xmin = 0", f"        xmax = {xmax}"]
        if kind == "IntervalTier":
            lines.append(f"        intervals: size = {len(entries)}")
            for j, (a, b, label) in enumerate(entries, 1):
                lines += [f"        intervals [{j}]:", f"            xmin = {a}",
                          f"            xmax = {b}", f'            text = "{label}"']
        else:
            lines.append(f"        points: size = {len(entries)}")
            for j, (t, _, label) in enumerate(entries, 1):
                lines += [f"        points [{j}]:", f"            number = {t}",
                          f'            mark = "{label}"']
    return "\n".join(lines) + "\n"


PHONES_A = [(0, 0.2, ""), (0.2, 0.55, "h"), (0.55, 1.2, "a"), (1.2, 2.0, "")]
WORDS_A = [(0, 0.2, ""), (0.2, 1.2, "ha"), (1.2, 2.0, "")]


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --- TextGrid --------------------------------------------------------------------------------


def test_textgrid_folder_by_relative_stem_and_tier(tmp_path):
    root = tmp_path / "tg"
    write(root / "spk00" / "a.TextGrid", textgrid(2.0, [("IntervalTier", "phones", PHONES_A),
                                                        ("IntervalTier", "words", WORDS_A),
                                                        ("TextTier", "tones", [(0.5, 0, "H")])]))
    write(root / "spk00" / "b.TextGrid", textgrid(1.5, [("IntervalTier", "phones", [(0, 1.5, "m")]),
                                                        ("IntervalTier", "words", [(0, 1.5, "m")])]))
    al = read_alignments(root, ITEMS, tier="phones")
    assert isinstance(al, Alignments)
    # empty intervals are "no label"; spk00/a.TextGrid is spk00/a.wav, not spk01/a.wav
    assert al.segments.to_dict("list") == {"item": [0, 0, 1], "start": [0.2, 0.55, 0.0],
                                           "end": [0.55, 1.2, 1.5], "label": ["h", "a", "m"]}
    assert al.unaligned == ("spk01/a.wav", "spk01/c.flac")
    assert al.source == "2 TextGrid files, tier 'phones'"
    assert al.segments_of(0)["label"].tolist() == ["h", "a"]
    assert al.segments_of(2).empty
    words = read_alignments(root, ITEMS, tier="words")
    assert words.segments["label"].tolist() == ["ha", "m"]


def test_textgrid_tier_missing_ambiguous_or_point(tmp_path):
    file = write(tmp_path / "tg" / "spk00" / "b.TextGrid",
                 textgrid(1.5, [("IntervalTier", "phones", [(0, 1.5, "m")]),
                                ("IntervalTier", "words", [(0, 1.5, "m")]),
                                ("TextTier", "tones", [(0.5, 0, "H")])]))
    with pytest.raises(DataError) as exc:
        read_alignments(tmp_path / "tg", ITEMS)
    assert one_line(exc) == (f"alignments {file}: 2 interval tiers (tiers: 'phones', 'words', "
                             "'tones'); name the tier to read with tier='NAME'")
    from embedx.cli import flag

    assert exc.value.render(flag).endswith("name the tier to read with --tier NAME")  # the CLI's spelling
    with pytest.raises(DataError, match=r"no tier 'segments'; tiers: 'phones', 'words', 'tones'"):
        read_alignments(tmp_path / "tg", ITEMS, tier="segments")
    with pytest.raises(DataError, match=r"'tones' is a point tier; interval tiers: 'phones', 'words'"):
        read_alignments(tmp_path / "tg", ITEMS, tier="tones")


def test_textgrid_single_file_one_tier_and_flat_stem(tmp_path):
    # a bare stem names the one item that has it (b); one interval tier needs no tier name
    file = write(tmp_path / "b.TextGrid", textgrid(1.5, [("IntervalTier", "x", [(0.5, 1.0, "s")])]))
    al = read_alignments(file, ITEMS)
    assert al.segments[["item", "start", "end", "label"]].values.tolist() == [[1, 0.5, 1.0, "s"]]
    assert len(al.unaligned) == 3 and al.source == "1 TextGrid file, tier 'x'"


def test_textgrid_malformed_and_ambiguous_stem(tmp_path):
    bad = write(tmp_path / "bad" / "b.TextGrid", 'File type = "ooTextFile"\nObject class = "TextGrid"\nxmin = 0\nxmax = oops\n')
    with pytest.raises(DataError) as exc:
        read_alignments(tmp_path / "bad", ITEMS)
    assert one_line(exc).startswith(f"alignments {bad}: not a readable TextGrid (")
    # "a" is the stem of spk00/a.wav and of spk01/a.wav
    write(tmp_path / "flat" / "a.TextGrid", textgrid(1.0, [("IntervalTier", "x", [(0, 1, "s")])]))
    with pytest.raises(DataError, match=r"'a' matches 2 store items \('spk00/a.wav', 'spk01/a.wav'\)"):
        read_alignments(tmp_path / "flat", ITEMS)


# --- CTM, RTTM, CSV --------------------------------------------------------------------------


CTM = """
;; utt channel start duration word conf
spk00/a 1 0.20 0.35 h 0.9
spk00/a 1 0.55 0.65 a
spk01/c.flac A 1.00 0.50 k 1.0
"""


def test_ctm_one_file_for_all_items(tmp_path):
    al = read_alignments(write(tmp_path / "all.ctm", CTM), ITEMS)
    assert al.segments["item"].tolist() == [0, 0, 3]
    np.testing.assert_allclose(al.segments["start"], [0.2, 0.55, 1.0])
    np.testing.assert_allclose(al.segments["end"], [0.55, 1.2, 1.5])  # start + duration
    assert al.segments["label"].tolist() == ["h", "a", "k"]
    assert al.unaligned == ("spk00/b.wav", "spk01/a.wav")
    assert al.source == "1 CTM file"


def test_folder_of_per_item_files_equals_one_file(tmp_path):
    whole = read_alignments(write(tmp_path / "all.ctm", CTM), ITEMS)
    lines = textwrap.dedent(CTM).strip().splitlines()
    write(tmp_path / "ctm" / "spk00" / "a.ctm", "\n".join(lines[:3]) + "\n")
    write(tmp_path / "ctm" / "spk01" / "c.ctm", lines[3] + "\n")
    split = read_alignments(tmp_path / "ctm", ITEMS)
    pd.testing.assert_frame_equal(whole.segments, split.segments)
    assert split.unaligned == whole.unaligned and split.source == "2 CTM files"


@pytest.mark.parametrize(("text", "line", "what"), [
    ("spk00/a 1 0.2 0.35 h\nspk00/a 1 0.55 a\n", 2, "expected 'utt channel start duration word [conf]', got 4 fields"),
    ("spk00/a 1 0.2 0.35 h\n\nspk00/a 1 x 0.3 a\n", 3, "start 'x' is not a number"),
    ("spk00/a 1 0.2 nan h\n", 1, "duration 'nan' is not a finite number"),
])
def test_ctm_malformed_line_named(tmp_path, text, line, what):
    file = write(tmp_path / "bad.ctm", text)
    with pytest.raises(DataError) as exc:
        read_alignments(file, ITEMS)
    assert one_line(exc) == f"alignments {file}, line {line}: {what}"


RTTM = """
SPKR-INFO c 1 <NA> <NA> <NA> unknown alice <NA> <NA>
SPEAKER c 1 0.50 1.00 <NA> <NA> alice <NA> <NA>
SPEAKER c 1 1.50 0.75 <NA> <NA> bob <NA> <NA>
SPEAKER spk00/b.wav 1 0.00 1.25 <NA> <NA> carol <NA> <NA>
"""


def test_rttm_speaker_turns(tmp_path):
    al = read_alignments(write(tmp_path / "diar.rttm", RTTM), ITEMS)
    assert al.segments.to_dict("list") == {"item": [1, 3, 3], "start": [0.0, 0.5, 1.5],
                                           "end": [1.25, 1.5, 2.25], "label": ["carol", "alice", "bob"]}
    assert al.unaligned == ("spk00/a.wav", "spk01/a.wav")


def test_rttm_malformed(tmp_path):
    file = write(tmp_path / "bad.rttm", "SPEAKER c 1 0.5 1.0 <NA> <NA> alice\nSPEKER c 1 0 1 <NA> <NA> x\n")
    with pytest.raises(DataError) as exc:
        read_alignments(file, ITEMS)
    assert one_line(exc).startswith(f"alignments {file}, line 2: unknown RTTM record type 'SPEKER'")
    file = write(tmp_path / "short.rttm", "SPEAKER c 1 0.5 1.0 <NA>\n")
    with pytest.raises(DataError, match=r"short.rttm, line 1: expected 'SPEAKER file chan start dur"):
        read_alignments(file, ITEMS)


def test_csv_by_id_and_by_path(tmp_path):
    by_id = write(tmp_path / "by_id.csv", """
        id,start,end,label,extra
        spk01/a.wav,0.1,0.4,x,1
        spk01/a.wav,0.4,0.9,,2
        spk00/b,0.0,1.5,y,3
        """)
    al = read_alignments(by_id, ITEMS)
    assert al.segments.to_dict("list") == {"item": [1, 2], "start": [0.0, 0.1], "end": [1.5, 0.4],
                                           "label": ["y", "x"]}
    by_path = write(tmp_path / "by_path.csv", "path,start,end,label\n/data/spk01/a.wav,0.1,0.4,x\n")
    assert read_alignments(by_path, ITEMS).segments["item"].tolist() == [2]


def test_csv_malformed(tmp_path):
    file = write(tmp_path / "cols.csv", "name,begin,end,label\nspk01/a.wav,0.1,0.4,x\n")
    with pytest.raises(DataError) as exc:
        read_alignments(file, ITEMS)
    assert one_line(exc) == (f"alignments {file}: missing column id (or path), start; columns: "
                             "name, begin, end, label")
    file = write(tmp_path / "num.csv", "id,start,end,label\nspk01/a.wav,0.1,0.4,x\nspk01/a.wav,0.5,end,y\n")
    with pytest.raises(DataError) as exc:
        read_alignments(file, ITEMS)
    assert one_line(exc) == f"alignments {file}, line 3: end 'end' is not a number"


# --- checks against the items ----------------------------------------------------------------


def test_overlap_names_both_segments(tmp_path):
    file = write(tmp_path / "o.csv", "id,start,end,label\nspk00/a.wav,0.0,0.5,x\n"
                 "spk00/b.wav,0.2,0.6,z\nspk00/a.wav,0.45,0.9,y\n")
    with pytest.raises(DataError) as exc:
        read_alignments(file, ITEMS)
    assert one_line(exc) == (
        f"alignments {file}, line 4: segment 0.450-0.900 s 'y' of item 'spk00/a.wav' overlaps "
        f"0.000-0.500 s 'x' ({file}, line 2); frame labels need segments that do not overlap")
    # touching segments (half-open) are fine
    ok = write(tmp_path / "t.csv", "id,start,end,label\nspk00/a.wav,0.0,0.5,x\nspk00/a.wav,0.5,0.9,y\n")
    assert len(read_alignments(ok, ITEMS).segments) == 2


@pytest.mark.parametrize(("row", "what"), [
    ("spk01/a.wav,-0.1,0.4,x", "segment 'x' of item 'spk01/a.wav' starts before 0 (-0.1 s)"),
    ("spk01/a.wav,0.4,0.4,x", "segment 'x' of item 'spk01/a.wav' ends at or before its start (0.4 s to 0.4 s)"),
    ("spk01/a.wav,0.5,0.2,x", "segment 'x' of item 'spk01/a.wav' ends at or before its start (0.5 s to 0.2 s)"),
    (f"spk01/a.wav,0.5,{1.0 + END_TOLERANCE + 0.01},x",
     "segment 'x' of item 'spk01/a.wav' ends at 1.060 s, after the item's end (1.000 s)"),
])
def test_out_of_range(tmp_path, row, what):
    file = write(tmp_path / "r.csv", f"id,start,end,label\nspk00/a.wav,0,1,ok\n{row}\n")
    with pytest.raises(DataError) as exc:
        read_alignments(file, ITEMS)
    assert one_line(exc) == f"alignments {file}, line 3: {what}"


def test_end_within_tolerance_is_kept(tmp_path):
    file = write(tmp_path / "r.csv", f"id,start,end,label\nspk01/a.wav,0.5,{1.0 + END_TOLERANCE - 0.01},x\n")
    assert read_alignments(file, ITEMS).segments["end"].tolist() == [pytest.approx(1.04)]


def test_unknown_items_counted_and_named(tmp_path):
    file = write(tmp_path / "u.ctm", "spk00/a 1 0 1 x\n" + "".join(
        f"ghost{k} 1 0 1 x\n" for k in range(5)) + "ghost0 1 1 1 y\n")
    with pytest.raises(DataError) as exc:
        read_alignments(file, ITEMS)
    assert one_line(exc) == (
        f"alignments {file}: 5 ids match no store item: 'ghost0', 'ghost1', 'ghost2' and 2 more; "
        f"first at {file}, line 2 (store ids look like 'spk00/a.wav')")


def test_paths_formats_and_folders_refused(tmp_path):
    with pytest.raises(DataError, match="do not exist"):
        read_alignments(tmp_path / "nope", ITEMS)
    with pytest.raises(DataError, match=r"unknown alignment format 'lab'; accepted: auto, textgrid, ctm, rttm, csv"):
        read_alignments(tmp_path, ITEMS, fmt="lab")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no alignment files \(.TextGrid, .ctm, .rttm, .csv\)"):
        read_alignments(tmp_path / "empty", ITEMS)
    write(tmp_path / "mixed" / "a.ctm", "spk00/a 1 0 1 x\n")
    write(tmp_path / "mixed" / "b.csv", "id,start,end,label\nspk00/b.wav,0,1,y\n")
    with pytest.raises(DataError, match=r"several formats \(csv, ctm\)"):
        read_alignments(tmp_path / "mixed", ITEMS)
    # naming the format reads only that format's files
    assert read_alignments(tmp_path / "mixed", ITEMS, fmt="ctm").segments["item"].tolist() == [0]
    # a file with another ending is read in the format named
    other = write(tmp_path / "words.txt", "spk00/b 1 0 1 x\n")
    with pytest.raises(DataError, match=r"cannot tell the format from the ending '.txt'"):
        read_alignments(other, ITEMS)
    assert read_alignments(other, ITEMS, fmt="ctm").segments["item"].tolist() == [1]


# --- frame labels ----------------------------------------------------------------------------


def test_frame_labels_half_open_boundaries():
    segments = pd.DataFrame({"start": [0.1, 0.3, 0.7], "end": [0.3, 0.5, 0.8], "label": ["x", "y", "z"]})
    centres = np.array([0.0, 0.1, 0.2999, 0.3, 0.4999, 0.5, 0.65, 0.7, 0.7999, 0.8, 1.0])
    got = frame_labels(segments, centres)
    assert got.dtype == object
    assert got.tolist() == [None, "x", "x", "y", "y", None, None, "z", "z", None, None]
    assert frame_labels(segments.iloc[:0], centres).tolist() == [None] * len(centres)


# --- frame times per family ------------------------------------------------------------------


def spec_of(backend, name: str, drop_timing: bool = False) -> FeatureSetSpec:
    """The spec stage 1 stores for ``backend`` (registry key ``name``); ``drop_timing``: as a
    store written before the frame_hop/frame_window/frame_offset attrs existed."""
    attrs = {k: v for k, v in backend.metadata().items()
             if k not in FeatureSetSpec.__dataclass_fields__
             and not (drop_timing and k.startswith("frame_"))}
    return FeatureSetSpec(name=name, backend=name, layers=(0,), dim=backend.dim,
                          poolings=("mean",), frames=True, dtype="float32",
                          frame_rate=backend.frame_rate, attrs=attrs)


def test_hf_frames_by_formula_and_model(tiny_model):
    from embedx.backends import create_backend

    backend = create_backend("hf", model=str(tiny_model("hubert")), device="cpu")
    spec = spec_of(backend, "hf")
    assert (spec.attrs["frame_hop"], spec.attrs["frame_window"], spec.attrs["frame_offset"]) == (0.02, 0.025, 0.0)
    i = np.arange(7)
    np.testing.assert_allclose(frame_centres(spec, 7), (320 * i + 200) / 16000, rtol=0, atol=1e-12)
    old = spec_of(backend, "hf", drop_timing=True)
    assert frame_timing(old).source == "derived" and frame_timing(spec).source == "stored"
    np.testing.assert_allclose(frame_centres(old, 7), frame_centres(spec, 7), rtol=0, atol=1e-12)
    rng = np.random.default_rng(0)
    for n in (400, 719, 720, 5000, 16123):
        out = backend.forward([backend.fit_length(rng.standard_normal(n).astype(np.float32))], [0])
        frames = int(out.lengths[0])
        centres = frame_centres(spec, frames + 1)
        # every frame the model gives has its whole window inside the audio; one more would not
        assert centres[frames - 1] + 0.0125 <= n / 16000 < centres[frames] + 0.0125


def test_whisper_frames_by_formula_and_model(tiny_model):
    from embedx.backends import create_backend

    backend = create_backend("whisper", model=str(tiny_model("whisper")), device="cpu")
    spec = spec_of(backend, "whisper")
    np.testing.assert_allclose(frame_centres(spec, 5), (np.arange(5) + 0.5) * 0.02, rtol=0, atol=1e-12)
    old = spec_of(backend, "whisper", drop_timing=True)
    np.testing.assert_allclose(frame_centres(old, 5), frame_centres(spec, 5), rtol=0, atol=1e-12)
    rng = np.random.default_rng(0)
    for n in (320, 16000, 16319):
        out = backend.forward([rng.standard_normal(n).astype(np.float32)], [0])
        frames = int(out.lengths[0])
        assert frames == n // 320  # 50 per second of real audio
        centres = frame_centres(spec, frames + 1)
        # frame i stands for [0.02 i, 0.02 (i + 1)): the last one ends inside the audio
        assert centres[frames - 1] + 0.01 <= n / 16000 < centres[frames] + 0.01


@pytest.mark.parametrize("feature_set", ["eGeMAPSv02", "ComParE_2016", "emobase", "IS09", "IS11"])
def test_opensmile_frames_match_opensmile_timestamps(feature_set):
    import opensmile

    from embedx.backends.opensmile import OpenSmileBackend

    backend = OpenSmileBackend(feature_set=feature_set, level="lld")
    spec = spec_of(backend, "opensmile")
    old = spec_of(backend, "opensmile", drop_timing=True)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                            feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    x = (0.1 * np.random.default_rng(1).standard_normal(16037)).astype(np.float32)
    index = smile.process_signal(x, 16000).index
    start = np.asarray(index.get_level_values("start").total_seconds())
    end = np.asarray(index.get_level_values("end").total_seconds())
    assert len(start) == backend.num_frames(len(x))
    centres = frame_centres(spec, len(start))
    # the last row is openSMILE's end-of-input flush; IS11/IS12's first row spans 0-70 ms
    rows = slice(1 if feature_set == "IS11" else 0, -1)
    np.testing.assert_allclose(centres[rows], ((start + end) / 2)[rows], rtol=0, atol=1e-9)
    np.testing.assert_allclose(frame_centres(old, len(start)), centres, rtol=0, atol=1e-12)


def test_utterance_level_sets_have_no_frame_times():
    spec = FeatureSetSpec(name="egemaps", backend="opensmile", layers=(0,), dim=3, poolings=("mean",),
                          frames=False, dtype="float32", frame_rate=None)
    with pytest.raises(DataError, match="'egemaps' has one vector per item"):
        frame_centres(spec, 3)
    unknown = FeatureSetSpec(name="mine", backend="custom", layers=(0,), dim=3, poolings=("mean",),
                             frames=True, dtype="float32", frame_rate=40.0)
    assert frame_timing(unknown).source == "assumed"
    np.testing.assert_allclose(frame_centres(unknown, 3), [0.0125, 0.0375, 0.0625])


# --- the example corpus's alignments ---------------------------------------------------------


def test_synth_vowel_labels_are_audible():
    """Each labelled stretch of a synthesised utterance sounds like its vowel: of the five vowel
    templates, its formant bands hold the most energy (an independent spectral check)."""
    from embedx.testing.synth import VOWEL_NAMES, VOWELS, utterance

    rng = np.random.default_rng(1)
    hits = total = 0
    for f0 in (100, 150, 230):
        for emotion in ("neutral", "happy", "sad", "angry"):
            events: list[tuple[float, float, str]] = []
            wave = utterance(emotion, f0, 1.0, 3.0, 16000, rng, events)
            assert [a < b for a, b, _ in events] == [True] * len(events)
            assert all(b0 <= a1 for (_, b0, _), (a1, _, _) in zip(events, events[1:], strict=False))
            # the labelled stretches are the loud middles of the syllables, the rest transitions
            labelled = np.zeros(len(wave), dtype=bool)
            for a, b, _ in events:
                labelled[int(round(a * 16000)):int(round(b * 16000))] = True
            energy = wave.astype(np.float64) ** 2
            assert energy[labelled].mean() > 3 * energy[~labelled].mean()
            for a, b, label in events:
                seg = wave[int(a * 16000):int(b * 16000)]
                if len(seg) < 640:  # a cut-off last syllable
                    continue
                power = np.abs(np.fft.rfft(seg * np.hanning(len(seg)))) ** 2
                freqs = np.fft.rfftfreq(len(seg), 1 / 16000)
                floor = np.log(power[(freqs > 50) & (freqs < 4000)].mean())
                # per template: log energy in its formant bands above the mean, summed
                scores = [sum(np.log(power[np.abs(freqs - fc) < 0.08 * fc + 50].sum()) - floor
                              for fc in formants) for formants in VOWELS]
                hits += VOWEL_NAMES[int(np.argmax(scores))] == label
                total += 1
    assert total > 100 and hits / total > 0.8  # chance: 0.2


def test_synth_writes_textgrids_that_cover_the_store(tmp_path, tiny_model):
    """The user promise: `embedx synth`, `embedx extract --frames`, and the example's TextGrids
    align every stored item and label a share of its frames with the five vowels."""
    from typer.testing import CliRunner

    from embedx.cli import app
    from embedx.store import StoreReader
    from embedx.testing.synth import ALIGNMENT_TIER, VOWEL_NAMES

    res = CliRunner().invoke(app, ["synth", str(tmp_path / "demo"), "--items", "6", "--speakers", "3"])
    assert res.exit_code == 0, res.output
    assert f"vowel TextGrids {tmp_path / 'demo' / 'alignments'}" in " ".join(res.output.split())
    grids = sorted(p.relative_to(tmp_path / "demo" / "alignments").with_suffix("").as_posix()
                   for p in (tmp_path / "demo" / "alignments").rglob("*.TextGrid"))
    res = CliRunner().invoke(app, ["extract", "--model", str(tiny_model("hubert")), "--frames",
                                   str(tmp_path / "demo" / "wavs"), "-o", str(tmp_path / "f.h5")])
    assert res.exit_code == 0, res.output
    with StoreReader(tmp_path / "f.h5") as store:
        items = store.items
        name = store.feature_sets()[0]
        spec = store.spec(name)
        frames = [store.frames(name, i, 0).shape[0] for i in range(len(items))]
    assert grids == sorted(i.rsplit(".", 1)[0] for i in items["id"])
    assert (spec.attrs["frame_hop"], spec.attrs["frame_window"], spec.attrs["frame_offset"]) == (0.02, 0.025, 0.0)
    al = read_alignments(tmp_path / "demo" / "alignments", items)
    assert al.unaligned == () and al.source == f"6 TextGrid files, tier '{ALIGNMENT_TIER}'"
    assert set(al.segments["label"]) == set(VOWEL_NAMES)
    for i, n in enumerate(frames):
        labels = frame_labels(al.segments_of(i), frame_centres(spec, n))
        share = np.mean([v is not None for v in labels])
        # the middle half of every syllable is labelled
        assert 0.35 < share < 0.65, (items["id"][i], share)
