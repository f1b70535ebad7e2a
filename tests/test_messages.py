"""Every option a message recommends exists under that name, and counts read right."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import typer

import embedx
from embedx.cli import app
from embedx.text import plural

OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _cli_options() -> set[str]:
    root = typer.main.get_command(app)
    options: set[str] = set()
    for command in root.commands.values():  # type: ignore[attr-defined]
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option":  # typer may vendor click
                options.update(o for o in [*param.opts, *param.secondary_opts] if o.startswith("--"))
    return options


def _strings_in_package() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    root = Path(embedx.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for option in OPTION.findall(node.value):
                    found.setdefault(option, []).append(str(path.relative_to(root)))
    return found


def test_every_recommended_option_exists():
    options = _cli_options()
    assert {"--cv", "--folds", "--group", "--no-group", "--overwrite", "--name"} <= options
    mentioned = _strings_in_package()
    assert len(mentioned) > 20  # the scan does see the messages
    unknown = {o: where for o, where in mentioned.items() if o not in options | {"--help", "--version"}}
    assert not unknown, f"messages name options the CLI does not have: {unknown}"


def _params_in_package() -> dict[str, list[str]]:
    """The options error messages name as ``Param("name", ...)`` parts, by the CLI's spelling."""
    from embedx.cli import flag
    from embedx.errors import Param

    found: dict[str, list[str]] = {}
    root = Path(embedx.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Param"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                option = flag(Param(node.args[0].value)).split()[0]
                found.setdefault(option, []).append(str(path.relative_to(root)))
    return found


def test_every_option_an_error_names_exists():
    named = _params_in_package()
    assert {"--overwrite", "--name", "--shard", "--short", "--seed", "-o"} <= set(named)
    # stage 2 names its options as Params too (fit, similarity, predict)
    assert {"--permutations", "--folds", "--cv", "--label-map", "--set", "--trust-pickle"} <= set(named)
    options = _cli_options() | {"-o"}
    unknown = {o: where for o, where in named.items() if o not in options}
    assert not unknown, f"errors name options the CLI does not have: {unknown}"


def test_the_library_names_arguments_and_the_cli_names_flags():
    """One error, two spellings: str() for the Python API, render(flag) for the command line."""
    import pickle

    from embedx.cli import flag
    from embedx.errors import OVERWRITE, Param, StoreConflictError, StoreError

    err = StoreConflictError("set 'x' {differs}. Use ", OVERWRITE, " to replace it, or ",
                             Param("name", "NAME"), " to keep both; or ", Param("output", "my dir/f.h5"))
    assert str(err) == ("set 'x' {differs}. Use overwrite=True to replace it, or name='NAME' to keep "
                        "both; or output='my dir/f.h5'")
    assert err.render(flag) == ("set 'x' {differs}. Use --overwrite to replace it, or --name NAME to keep "
                                "both; or -o 'my dir/f.h5'")
    assert [p.name for p in err.params] == ["overwrite", "name", "output"]
    assert isinstance(err, StoreError)
    again = pickle.loads(pickle.dumps(err))  # errors cross process boundaries intact
    assert type(again) is StoreConflictError and again.render(flag) == err.render(flag)
    plain = StoreError("no such store")  # a message without options is untouched
    assert str(plain) == plain.render(flag) == "no such store" and plain.params == ()


def test_the_cli_prints_the_flags_of_an_error(tmp_path):
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, ["extract", str(tmp_path), "--opensmile", "egemaps", "--seed", "7",
                                   "-o", str(tmp_path / "f.h5")])
    assert res.exit_code == 2, res.output
    assert "--seed 7 seeds the weights of --random-init; give --random-init too" in res.output


def test_a_stage_2_error_names_the_argument_in_python_and_the_flag_on_the_command_line(tmp_path):
    """fit's checks run before the store is read: one error, the API's and the CLI's spelling."""
    import pytest
    from typer.testing import CliRunner

    from embedx.api import fit
    from embedx.errors import ConfigError

    store = str(tmp_path / "feats.h5")
    with pytest.raises(ConfigError) as err:
        fit(store, label="label", permutations=-1)
    assert str(err.value) == "permutations=-1 not accepted; it must be >= 0"
    res = CliRunner().invoke(app, ["fit", "-f", store, "--label", "label", "--permutations", "-1"])
    assert res.exit_code == 2
    assert res.output == "embedx: invalid option: --permutations -1 not accepted; it must be >= 0\n"
    res = CliRunner().invoke(app, ["fit", "-f", store, "--segments", "--alignments", "a", "--by", "x"])
    assert res.exit_code == 2, res.output
    assert res.output == "embedx: invalid option: --by is not available with --segments (yet)\n"
    with pytest.raises(ConfigError, match=r"^by is not available with segments=True \(yet\)$"):
        fit(store, segments=True, alignments="a", by=["x"])


def test_options_stage_2_names_by_a_variable_exist():
    """Params built from a variable (the scan above sees only literal names) name fit options."""
    from embedx.options import COMMANDS
    from embedx.probing.orchestrate import _NOT_WITH_FRAMES

    fit_options = {o.name for o in COMMANDS["fit"].options}
    assert set(_NOT_WITH_FRAMES) | {"by", "domain"} <= fit_options  # item_columns(option=...)


def test_plural():
    assert [plural(n, "item") for n in (0, 1, 2)] == ["0 items", "1 item", "2 items"]
    assert plural(1, "batch", "batches") == "1 batch" and plural(3, "batch", "batches") == "3 batches"


def test_a_binary_file_given_as_yaml_is_one_line(tmp_path):
    """--label-map, --grid and --preset name a binary file (e.g. the store) in one line."""
    import pytest

    from embedx.errors import ConfigError
    from embedx.extraction.config import load_preset
    from embedx.probing.grids import load_grids
    from embedx.probing.label_map import read_label_map

    binary = tmp_path / "feats.h5"
    binary.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)))
    for load, what in ((read_label_map, "label_map"), (load_grids, "tuning grids"), (load_preset, "preset")):
        with pytest.raises(ConfigError, match=rf"{what} '.*feats.h5' (is|are) not a UTF-8 text \(YAML\) file"):
            load(binary)


def test_number():
    import math

    import pandas as pd

    from embedx.text import number

    assert [number(v) for v in (0.12345, 1, -0.5)] == ["0.123", "1.000", "-0.500"]
    assert number(0.12345, digits=1) == "0.1"
    assert {number(v) for v in (None, pd.NA, math.nan, math.inf)} == {"–"}
    assert number("egemaps") == "egemaps"


def test_size():
    from embedx.text import size

    assert [size(v) for v in (0, 1, 999, 999.4)] == ["0 B", "1 B", "999 B", "999 B"]
    # three significant digits; a value that would round to 1000 of a unit takes the next unit
    assert [size(v) for v in (999.5, 1000, 9_994, 9_995, 49_152, 99_949, 99_950, 999_499, 999_500)] == [
        "1.00 KB", "1.00 KB", "9.99 KB", "10.0 KB", "49.2 KB", "99.9 KB", "100 KB", "999 KB", "1.00 MB"]
    assert [size(v) for v in (1_234_567, 12_345_678_901, 2.5e15, 3e18)] == [
        "1.23 MB", "12.3 GB", "2.50 PB", "3000 PB"]
    assert {size(v) for v in (None, float("nan"), float("inf"), -1)} == {"–"}


def test_shorten():
    from embedx.text import shorten

    assert shorten("abc", 3) == "abc" and shorten("abcd", 3) == "..."
    assert shorten("one two three", 10) == "one two..." and len(shorten("x" * 500, 200)) == 200


def test_why_a_folder_cannot_take_a_file(tmp_path):
    import errno
    import os

    from embedx.paths import file_system_type, why_not_writable

    def err(code):
        return OSError(code, os.strerror(code))

    assert why_not_writable(tmp_path, err(errno.EROFS)) == f"{tmp_path} is on a read-only file system"
    assert why_not_writable(tmp_path, err(errno.EACCES)) == (
        f"the folder {tmp_path} is not writable by this user (Permission denied)")
    assert why_not_writable(tmp_path, err(errno.ENOSPC)) == (
        f"no room for a new file in {tmp_path} (No space left on device)")
    assert why_not_writable(tmp_path, err(errno.ENOENT)) == (
        f"the folder {tmp_path} does not accept a new file (No such file or directory)")
    if os.path.isdir("/proc/self"):  # Linux: the mount table names the kernel's file systems
        assert file_system_type("/proc") == file_system_type("/proc/self") == "proc"
        assert file_system_type(tmp_path) not in (None, "proc")
        assert why_not_writable("/proc", err(errno.ENOENT)).startswith("/proc is on the kernel's proc file system")


def test_the_summary_line_prints_no_nan_rates(tmp_path):
    from embedx.extraction.run_stats import ExtractSummary

    retried = ExtractSummary(output=tmp_path / "f.h5", name="m", num_items=5, failed=2, failed_total=2,
                             done_total=3)
    assert retried.line() == f"extracted 0 items; 2 failed; 'm' now 3/5 done -> {tmp_path / 'f.h5'}"
    ran = ExtractSummary(output=tmp_path / "f.h5", name="m", num_items=5, processed=4, audio_seconds=10.0,
                         elapsed=2.0, failed=1, failed_total=1, done_total=4)
    assert ran.line().startswith("extracted 4 items (10.0 s of audio) in 2.0 s: 2.00 items/s, 5.0 audio-s/s; 1 failed")
    assert not retried.all_failed and not ran.all_failed
    none = ExtractSummary(output=tmp_path / "f.h5", name="m", num_items=2, failed=2, failed_total=2,
                          failures=[("probe", 1, "a.mp3", "cannot read audio header: x"),
                                    ("forward", 1, "b.wav", "y" * 300)])
    assert none.all_failed
    assert none.all_failed_line() == (
        f"all 2 items of 'm' failed (1 could not be read, first: a.mp3: cannot read audio header: x; "
        f"1 failed in the model, first: b.wav: {'y' * 197}...); nothing was written; "
        f"see `embedx info {tmp_path / 'f.h5'} --failed`")


def test_a_single_valued_option_given_twice_is_one_line_not_the_last_value(tmp_path):
    # click keeps the last of a repeated option without a word; `--group speaker --group
    # sentence` would silently group by sentence only
    from tests.clirun import run_embedx

    done = run_embedx("fit", "--features", str(tmp_path / "f.h5"), "--group", "speaker", "--group=sentence")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "embedx: usage: --group given 2 times ('speaker', 'sentence'); it takes one value; for speaker- and "
        "sentence-independent folds: --group speaker --cross-group sentence"]
    assert not (tmp_path / "results").exists()


def test_repeated_reads_flags_values_and_leaves_repeatable_options_alone():
    from embedx.options import COMMANDS

    fit = COMMANDS["fit"]
    assert fit.repeated(["--set", "a", "--set", "b", "--by", "x", "--by", "y"]) is None  # repeatable
    assert fit.repeated(["--group", "speaker", "--", "--group"]) is None  # after --: not options
    assert fit.repeated(["-o", "r1", "--models", "svm", "--output=r2"]) == ("--output", ["r1", "r2"])
    assert fit.repeated(["--quiet", "--quiet"]) is None  # a switch twice changes nothing
    assert COMMANDS["extract"].repeated(["--model", "m", "wavs", "--model"]) == ("--model", ["m", ""])
