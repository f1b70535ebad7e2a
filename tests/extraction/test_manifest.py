import pandas as pd
import pytest

from embedx.errors import InputError
from embedx.extraction.manifest import build_items
from embedx.testing.synth import tone


@pytest.fixture
def corpus(write_audio, tmp_path):
    for rel in ["b/2.wav", "a/1.flac", "a/sub/3.wav", "z.WAV", "é ü/4.wav"]:
        write_audio(f"wavs/{rel}", tone(300, 0.1))
    (tmp_path / "wavs" / "notes.txt").write_text("not audio")
    return tmp_path / "wavs"


def test_folder_is_scanned_recursively_with_stable_relative_ids(corpus):
    items = build_items([str(corpus)])
    assert items["id"].tolist() == ["a/1.flac", "a/sub/3.wav", "b/2.wav", "z.WAV", "é ü/4.wav"]
    assert items.columns.tolist() == ["id", "path"]
    # the same folder given by another spelling yields the same ids
    assert build_items([str(corpus) + "/"])["id"].tolist() == items["id"].tolist()


def test_file_list_and_files(corpus, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("wavs/b/2.wav\n# comment\n\nwavs/a/1.flac\n")
    assert build_items([str(lst)])["id"].tolist() == ["b/2.wav", "a/1.flac"]
    items = build_items([str(corpus / "z.WAV"), str(corpus / "b" / "2.wav")])
    assert items["id"].tolist() == ["z.WAV", "b/2.wav"]


def test_manifest_keeps_order_and_columns_relative_to_root(corpus, tmp_path):
    pd.DataFrame({"file": ["b/2.wav", "a/1.flac", "missing.wav"], "label": ["x", "y", "x"],
                  "speaker": [1, 2, 1], "duration": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "m.csv", index=False)
    items = build_items([str(corpus)], manifest=str(tmp_path / "m.csv"))
    assert items["id"].tolist() == ["b/2.wav", "a/1.flac", "missing.wav"]
    assert items["path"].tolist()[0] == str(corpus / "b/2.wav")
    assert items.columns.tolist() == ["id", "path", "label", "speaker", "duration_manifest"]
    assert items["speaker"].tolist() == [1, 2, 1]


def test_manifest_errors_name_the_problem(tmp_path):
    pd.DataFrame({"wavname": ["a.wav"], "label": ["x"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(InputError, match="no path column.*wavname"):
        build_items(manifest=str(tmp_path / "m.csv"))
    with pytest.raises(InputError, match="--path-column 'nope'"):
        build_items(manifest=str(tmp_path / "m.csv"), path_column="nope")
    pd.DataFrame({"path": ["a.wav", "a.wav"]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(InputError, match="duplicate"):
        build_items(manifest=str(tmp_path / "d.csv"))
    with pytest.raises(InputError, match="does not exist"):
        build_items([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no audio files"):
        build_items([str(tmp_path / "empty")])
