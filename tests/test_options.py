"""The options of every command, declared once (embedx/options.py): the CLI and the Python API
take the same names with the same defaults, and say what they do with the declared help.

The checks read what typer built (the click command's parameters) and what Python sees
(``inspect.signature`` and the function's own defaults), never the declaration twice.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path

import pytest
import typer

import embedx.api as api
import embedx.cli as cli
from embedx.extraction.config import CLI_FIELDS, ExtractConfig, config_from_options
from embedx.extraction.pooling import split_poolings
from embedx.options import COMMANDS, REQUIRED, Command
from embedx.probing.study import StudySettings

CLICK = typer.main.get_command(cli.app)


def _plain(value, repeatable: bool = False):
    """Defaults compared as values: a path as its text; a repeatable option given none: ()."""
    if isinstance(value, Path):
        return str(value)
    if repeatable and not value:
        return ()
    return value


def _base_type(hint) -> type:
    """``Annotated[list[str] | None, ...]`` -> ``list``; ``Path | None`` -> ``Path``."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if isinstance(hint, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


@pytest.mark.parametrize("name", list(COMMANDS))
def test_cli_takes_the_declared_options(name):
    decl: Command = COMMANDS[name]
    command = CLICK.commands[name]
    renamed = {old: o for o in decl for old in o.renamed_from}
    params = {p.name: p for p in command.params if p.name != "help"}
    assert set(params) == {o.param for o in decl.on("cli")} | set(renamed), "CLI and declaration differ"
    hints = typing.get_type_hints(getattr(cli, name).__wrapped__, include_extras=True)
    for o in decl.on("cli"):
        p = params[o.param]
        where = f"{name} {o.name}"
        assert (p.param_type_name == "argument") == o.argument, where
        if not o.argument:
            spelled = {f for flag in o.cli_flags for f in flag.split("/")}
            assert set(p.opts) | set(p.secondary_opts) == spelled, where
            assert p.help == o.help_text(), where
        if o.default is REQUIRED:
            assert p.required, where
        else:
            many = o.type is list
            assert not p.required and _plain(p.default, many) == _plain(o.cli_default, many), where
        assert _base_type(hints[o.param]) is o.type, where
    for old, new in renamed.items():  # the old spelling: hidden, no default of its own
        p = params[old]
        assert p.hidden and p.default is None and p.opts == ["--" + old.replace("_", "-")]
        assert _base_type(hints[old]) is new.type


def _own_defaults(fn) -> dict:
    """The defaults the function's code has (``__signature__`` aside), by parameter name."""
    code = fn.__code__
    names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    positional = dict(zip(names[code.co_argcount - len(fn.__defaults__ or ()):code.co_argcount],
                          fn.__defaults__ or (), strict=True))
    return {**{n: REQUIRED for n in names}, **positional, **(fn.__kwdefaults__ or {})}


@pytest.mark.parametrize("name", [n for n, c in COMMANDS.items() if c.api is not None])
def test_api_takes_the_declared_options(name):
    decl = COMMANDS[name]
    fn = getattr(api, decl.api)
    signature = inspect.signature(fn)
    named = {n: p for n, p in signature.parameters.items() if p.kind is not p.VAR_KEYWORD}
    assert set(named) == {o.name for o in decl.on("api")}, "API and declaration differ"
    for o in decl.on("api"):
        many = o.type is list
        assert _plain(named[o.name].default, many) == _plain(o.default, many), f"{name}({o.name}=...)"
    # the code's own parameters, where a declared signature stands in front of **options
    for param, default in _own_defaults(fn).items():
        many = decl[param].type is list
        assert _plain(default, many) == _plain(decl.default(param), many), f"{name}({param}=...) in the code"
    extra = [p for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD]
    assert not extra or any(o.renamed_from for o in decl), "undeclared **kwargs"


def test_every_command_is_declared_and_cli_only_options_say_why():
    assert set(CLICK.commands) == set(COMMANDS)
    for decl in COMMANDS.values():
        assert decl.api is not None or decl.why, decl.name
        for o in decl:
            assert o.where in ("both", "cli", "api") and (o.where == "both" or o.why), (decl.name, o.name)
            assert o.help_text() and "{" not in o.help_text().replace("{raw", "").replace("{domain", "")


def test_extract_options_reach_the_config_with_the_declared_defaults():
    """extract's ``**options`` become an ExtractConfig: every declared option is read there, and
    one not given gets the declared default (the config's fields have other names)."""
    decl = COMMANDS["extract"]
    assert set(api._OWN_EXTRACT_OPTIONS) == set(CLI_FIELDS) | {"opensmile", "opensmile_level", "random_init",
                                                             "seed"}
    config = config_from_options({"model": "m"})
    for option, field in CLI_FIELDS.items():
        if option == "model":
            continue
        declared = decl.default(option)
        expected = split_poolings(declared) if option == "pooling" else declared
        assert getattr(config, field) == expected, option
        assert ExtractConfig.__dataclass_fields__[field].default == expected, option
    assert config.poolings == ("mean",) and config.backend_options == {} and config.progress is True


#: the study's settings still spell some of fit's options differently (listed, not renamed: the
#: settings dataclass is being restructured elsewhere); their defaults must still agree
FIT_TO_STUDY = {"models": "models", "cv": "scheme", "folds": "n_splits", "seed": "seed", "metric": "metric",
                "speaker_norm": "speaker_norm", "tune": "tune", "inner_folds": "inner_folds",
                "bootstrap": "n_boot", "alpha": "alpha", "jobs": "jobs", "threads": "threads",
                "engine": "backend", "scheduler": "scheduler", "save_model": "refit",
                "permutations": "permutations"}


def test_fit_defaults_reach_the_study_settings():
    fit = COMMANDS["fit"]
    fields = StudySettings.__dataclass_fields__
    for option, field in FIT_TO_STUDY.items():
        assert fields[field].default == fit.default(option), f"--{option} vs StudySettings.{field}"
    assert fit.default("class_weight") == "none" and fields["class_weight"].default is None


def test_choices_written_out_match_their_owners():
    """Choices spelled in the declaration (their owners import h5py, torch or opensmile, which
    `embedx --help` must not) are the owners' lists."""
    from embedx.backends.loading import PRECISIONS
    from embedx.store.spec import STORAGE_DTYPES

    extract = COMMANDS["extract"]
    assert extract["dtype"].accepted() == list(STORAGE_DTYPES)
    assert sorted(extract["precision"].accepted()) == sorted(PRECISIONS)
    opensmile = pytest.importorskip("embedx.backends.opensmile")
    assert extract["opensmile_level"].accepted() == list(opensmile.LEVELS)


def test_synth_defaults_are_the_examples_own():
    from embedx.testing.synth import make_example

    defaults = inspect.signature(make_example).parameters
    synth = COMMANDS["synth"]
    assert synth.default("items") == defaults["num_items"].default
    assert synth.default("speakers") == defaults["num_speakers"].default
    assert synth.default("seed") == defaults["seed"].default
