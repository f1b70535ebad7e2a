"""embedx.errors.one_line: how every message quotes a library's exception."""

import pytest

from embedx.errors import one_line


def test_one_line_joins_lines_and_collapses_whitespace():
    exc = OSError("Error opening 'a.wav':\n  Format not recognised.\t(code 1)")
    assert one_line(exc) == "Error opening 'a.wav': Format not recognised. (code 1)"


def test_one_line_first_line_only():
    exc = ValueError("while parsing a block mapping\n  in 'grids.yaml', line 3\nexpected <block end>")
    assert one_line(exc, first_line=True) == "while parsing a block mapping"
    assert one_line(ValueError("  lead  and   trail  \nmore"), first_line=True) == "lead and trail"


@pytest.mark.parametrize("first_line", [False, True])
def test_one_line_names_the_type_of_an_empty_message(first_line):
    assert one_line(TimeoutError(), first_line=first_line) == "TimeoutError"
    assert one_line(ValueError("\n  \n"), first_line=first_line) == "ValueError"
    assert one_line(UserWarning("a\nb"), first_line=first_line) == ("a" if first_line else "a b")
