"""The command line, generated over every command from its config type: one override syntax, generated --help,
unknown keys refused with a suggestion. Nothing here trains or times a model (only configs are parsed)."""

from __future__ import annotations

import typing

import pytest
import yaml

from autotinybert.cli import Command, command_help, commands, main, parse
from autotinybert.config import Config, ConfigError, field_docs

COMMANDS = commands()
IDS = [c.name for c in COMMANDS]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The smallest real inputs every command's required keys can point at."""
    root = tmp_path_factory.mktemp("cli")
    (root / "corpus.txt").write_text("A sentence of text.\n")
    (root / "data" / "SST-2").mkdir(parents=True)
    (root / "data" / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    pipeline = root / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"out": str(root / "run"), "data": {"corpus": [str(root / "corpus.txt")],
                                                                            "downstream": str(root / "data")}}))
    return root


def minimal_args(command: Command, root) -> list[str]:
    """Positional arguments and key=value settings that make `command`'s config valid."""
    values = {
        "train-supernet": ["out=o", f"corpus={root / 'corpus.txt'}"],
        "train-model": ["out=o", f"corpus={root / 'corpus.txt'}", "model=m"],
        "prepare-corpus": [f"corpus={root / 'corpus.txt'}"],
        "extract": ["supernet=s", "arch=1-128-128-2-128", "out=o"],
        "export": ["m"],
        "latency measure": ["out=lat.jsonl"],
        "latency fit": ["lat.jsonl", "out=p.json"],
        "latency bench": ["1-128-128-2-128"],
        "search": ["speedup=10", "evaluator=m:f", "out=o"],
        "rank-eval": ["a.jsonl", "b.jsonl"],
        "finetune": ["model=m", "task=sst2", f"data={root / 'data'}", "out=o"],
        "evaluate": ["model=m", "tasks=sst2", f"data={root / 'data'}", "out=o"],
        "run": [str(root / "pipeline.yaml")],
        "report": ["runs/x"],
    }
    return list(values.get(command.name, []))


POSITIONAL_VALUES = {"name": "cpu-mlm", "files": ["lat.jsonl"], "archs": ["1-128-128-2-128"], "a": "a.jsonl",
                     "b": "b.jsonl", "run_dir": "runs/x", "model": "m"}


def leaf_keys(cls: type[Config]) -> list[tuple[str, typing.Any]]:
    """(dotted key, default) of every non-section key, nested sections included."""
    return [(key, default) for key, kind, default, _ in field_docs(cls) if kind != "section"]


def value_at(config: Config, key: str):
    value = config
    for part in key.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_every_key_of_every_command_takes_the_same_override_syntax(command, files, monkeypatch):
    monkeypatch.chdir(files)
    base = minimal_args(command, files)
    parse(command, base)  # the minimal arguments are valid on their own
    checked = 0
    for key, default in leaf_keys(command.config_class()):
        if default is None or default == "" or default == []:
            continue  # nothing generic to set: required keys are covered by the minimal arguments
        if isinstance(default, (list, tuple, dict)) and not default:
            continue
        text = yaml.safe_dump(list(default) if isinstance(default, tuple) else default,
                              default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
        config = parse(command, [*base, f"{key}={text}"])
        got = value_at(config, key)
        expected = default
        if isinstance(got, tuple):
            got = list(got)
        if isinstance(expected, tuple):
            expected = list(expected)
        if isinstance(got, Config):
            got = got.to_dict()
        assert got == expected or str(got).endswith(str(expected)), (command.name, key, got, expected)
        checked += 1
    keys = command.config_class().positional_keys()  # a positional key may also be written key=value
    if keys:
        written = {key: POSITIONAL_VALUES[key] for key in keys}
        named = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                 for k, v in written.items()]
        config = parse(command, [*[t for t in base if "=" in t], *named])
        assert {k: getattr(config, k) for k in keys} == written
        checked += len(keys)
    assert checked >= 1, command.name


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_help_lists_every_key_with_type_and_default(command, capsys):
    assert main([*command.words, "--help"]) == 0
    text = capsys.readouterr().out
    assert text == command_help(command) + "\n"
    for key, kind, default, doc in field_docs(command.config_class()):
        assert f"  {key} (" in text or f"  {key}:" in text, (command.name, key)
        if doc:
            assert " ".join(doc.split())[:40] in " ".join(text.split()), (command.name, key)


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_unknown_key_and_dash_options_are_refused_with_a_suggestion(command, files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    base = minimal_args(command, files)
    key, _ = next((k, d) for k, d in leaf_keys(command.config_class()) if "." not in k and len(k) > 3)
    typo = key + "s"
    assert main([*command.words, *base, f"{typo}=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"unknown key {typo!r}" in err and f"did you mean {key!r}" in err
    assert "Traceback" not in err
    assert main([*command.words, *base, f"--{key.replace('_', '-')}", "1"]) == 2
    assert f"write {key}=VALUE" in capsys.readouterr().err


def test_nested_keys_are_checked_and_suggested_at_every_depth(files, monkeypatch):
    monkeypatch.chdir(files)
    run = next(c for c in COMMANDS if c.name == "run")
    base = minimal_args(run, files)
    for wrong, right in (("supernet.lerning_rate=1", "learning_rate"), ("finetune.config.epoch=1", "epochs"),
                         ("latency.repeat=3", "repeats"), ("serch.population=3", "search")):
        with pytest.raises(ConfigError, match=f"did you mean {right!r}"):
            parse(run, [*base, wrong])
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):  # a renamed key names its new name
        parse(run, [*base, "supernet.lr=1e-3"])
    config = parse(run, [*base, "supernet.space.layers.max=2", "finetune.task_configs.sst2.epochs=2"])
    assert config.supernet.space["layers"]["max"] == 2 and config.supernet.space["hidden"]["max"] == 256
    assert config.finetune.task_config("sst2").epochs == 2
    with pytest.raises(ConfigError, match="layers"):  # a space that no longer holds together is refused
        parse(run, [*base, "supernet.space.layers.min=9"])


def test_values_are_typed_and_paths_follow_their_source(files, monkeypatch):
    monkeypatch.chdir(files)
    run = next(c for c in COMMANDS if c.name == "run")
    config = parse(run, [*minimal_args(run, files), "search.speedups=[30,60]", "supernet.learning_rate=1e-4",
                        "out=relative/run"])
    assert config.search.speedups == [30.0, 60.0] and config.supernet.learning_rate == 1e-4
    assert config.out == "relative/run"  # a command-line path stays relative to the current folder
    nested = files / "sub"
    nested.mkdir(exist_ok=True)
    (nested / "p.yaml").write_text(f"out: here\ndata: {{corpus: [../corpus.txt], downstream: {files / 'data'}}}\n")
    from_file = parse(run, [str(nested / "p.yaml")])
    assert from_file.out == str(nested / "here") and from_file.data.corpus == [str(files / "corpus.txt")]
    with pytest.raises(ConfigError, match="population: input should be greater than 0"):
        parse(run, [*minimal_args(run, files), "search.population=0"])
    with pytest.raises(ConfigError, match="window"):
        parse(run, [*minimal_args(run, files), "search.window=[1.2,0.8]"])
