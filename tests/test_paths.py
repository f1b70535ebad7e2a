"""embedx.paths: the one file-name sanitiser (CKA and transfer figures are named with it)."""

from __future__ import annotations

from embedx.paths import file_part


def test_file_part_keeps_safe_names_and_replaces_the_rest():
    assert file_part("hubert-base-ls960") == "hubert-base-ls960"
    assert file_part("wavlm_base.plus") == "wavlm_base.plus"
    assert file_part("my set: v2/x") == "my-set-v2-x"  # each run of unsafe characters is one '-'
    assert file_part(" (logreg) ") == "logreg"  # no '-' at either end
    assert file_part("???") == "x"  # never an empty part
