"""Every command of the CLI, generated from `autotinybert.cli.commands()`, with generic bad inputs: a missing path,
a folder where a file is expected and a file where a folder is, a binary file, an empty file or folder, a model
folder of the wrong kind or with a truncated model.safetensors, and outputs that cannot be written (under a read-only
pseudo file system, under a regular file, a file where a folder is expected). Each must end with exit status 2 and
exactly one ``error:`` line naming the path, no traceback, and nothing left behind (no staging or probe folders, the
file in the way untouched). Runs in process; nothing trains: every case fails in the checks before the work.

Root ignores permission bits, so an unwritable output is a path under /sys (a read-only pseudo file system: EACCES
or EROFS even for root) or under a regular file (ENOTDIR for everyone).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from autotinybert.cli import commands, main

UNWRITABLE_ROOT = Path("/sys/autotinybert-test-out")
ARCH = "1-16-32-1-16"
SPACE = {"attention": "heads", "layers": [1, 2], "hidden": [16, 32, 16], "ffn": [32, 64, 32], "heads": [1, 2],
         "head_size": 16}
FLOPS = "autotinybert.search.target:FlopsLatencyModel"
WORDS = "the a cat dog sat ran on under mat table quickly slowly red blue big small house garden tree".split()


# ------------------------------------------------------------------------------------------------ the world
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Valid inputs for every command, and one of each kind of bad input."""
    import numpy as np
    from transformers import BertTokenizerFast

    from autotinybert import SearchSpace, SuperBertConfig, SuperBertForMaskedLM, extract, save_extracted
    from autotinybert.latency.measure import LatencyRecord

    root = tmp_path_factory.mktemp("bad-inputs")
    rng = np.random.default_rng(0)
    docs = ("\n".join(" ".join(rng.choice(WORDS, size=10)) + " ." for _ in range(4)) for _ in range(40))
    (root / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    # a tokenizer, a supernet folder and a model extracted from it
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "."]) + "\n")
    BertTokenizerFast(vocab=str(root / "vocab.txt")).save_pretrained(root / "tok")
    torch.manual_seed(0)
    supernet = SuperBertForMaskedLM(SuperBertConfig(space=SearchSpace.from_dict(SPACE, name="tiny"),
                                                    vocab_size=len(WORDS) + 6, max_position_embeddings=64))
    supernet.save_pretrained(root / "supernet", tokenizer_dir=root / "tok")
    save_extracted(extract(supernet, ARCH), root / "model", tokenizer_dir=root / "supernet")
    # GLUE-style task data
    (root / "glue" / "SST-2").mkdir(parents=True)
    rows = "sentence\tlabel\n" + "".join(f"{w} is good\t1\n{w} is bad\t0\n" for w in WORDS)
    for name in ("train.tsv", "dev.tsv"):
        (root / "glue" / "SST-2" / name).write_text(rows)
    # score files, a latency file, a pipeline config
    for name, scores in (("a.jsonl", (1.0, 2.0)), ("b.jsonl", (2.0, 1.0))):
        (root / name).write_text("".join(json.dumps({"arch": a, "fitness": f}) + "\n"
                                         for a, f in zip(("1-16-32-1-16", "2-32-64-2-32"), scores)))
    lines = [LatencyRecord.from_dict({"arch": a, "median_ms": ms, "iqr_ms": 0.1, "repeats": 3}).to_dict()
             for a, ms in (("1-16-32-1-16", 1.0), ("2-32-64-2-32", 2.0))]
    (root / "lat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (root / "pipeline.yaml").write_text(yaml.safe_dump({
        "out": str(root / "run-out"), "progress": False,
        "data": {"corpus": [str(root / "corpus.txt")], "downstream": str(root / "glue"), "max_seq_length": 16,
                 "tokenizer_vocab_size": 100},
        "supernet": {"space": SPACE}, "latency": {"baseline_head_size": 16}}))
    # the bad inputs
    (root / "a-folder").mkdir()
    (root / "a-folder" / "inside.txt").write_text("text\n")
    (root / "empty-folder").mkdir()
    (root / "empty.txt").write_bytes(b"")
    (root / "binary.bin").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(rng.integers(0, 256, 4000, dtype=np.uint8)))
    (root / "a-file").write_text("in the way\n")
    for name, source in (("truncated-model", "model"), ("truncated-supernet", "supernet")):
        os.system(f"cp -r '{root / source}' '{root / name}'")
        weights = root / name / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:500])
    (root / "binary-config").mkdir()
    (root / "binary-config" / "config.json").write_bytes((root / "binary.bin").read_bytes())
    (root / "binary-config" / "model.safetensors").write_bytes((root / "binary.bin").read_bytes())
    return root


# ------------------------------------------------------------------------------------------------ the cases
# Kinds of bad value, per role of a setting. Each maps to (value relative to the world, what the error must name).
INPUT_FILE = {"missing": "no-such-file.json", "folder": "a-folder", "binary": "binary.bin", "empty": "empty.txt"}
INPUT_FOLDER = {"missing": "no-such-folder", "file": "binary.bin", "empty": "empty-folder"}
MODEL_FOLDER = {**INPUT_FOLDER, "truncated": "truncated-model", "wrong kind": "supernet",
                "binary config": "binary-config"}
SUPERNET_FOLDER = {**INPUT_FOLDER, "truncated": "truncated-supernet", "wrong kind": "model",
                   "binary config": "binary-config"}
CORPUS = {"missing": "no-such-corpus.txt", "binary": "binary.bin", "empty": "empty.txt", "empty folder": "empty-folder"}
NAME_OR_FOLDER = {"missing": "./no-such-tokenizer", "file": "binary.bin", "empty": "empty-folder"}
SPACE_FILE = {"missing": "./no-such-space.yaml", "folder": "a-folder", "binary": "binary.bin"}
OUT_FOLDER = {"unwritable": "@unwritable", "under a file": "a-file/out", "a file": "a-file"}
OUT_FILE = {"unwritable": "@unwritable", "under a file": "a-file/out.json", "a folder": "a-folder"}
CONFIG_FILE = {"missing": "no-such-config.yaml", "folder": "a-folder", "binary": "binary.bin"}

TRAIN = ["max_steps=1", "progress=false", "tokenizer_vocab_size=100", "max_seq_length=16", "batch_size=2",
         "threads=1", "device=cpu"]


@dataclass(frozen=True)
class Slot:
    key: str | None  # None: positional
    kinds: dict[str, str]
    extra: tuple[str, ...] = ()  # settings that make the slot read (e.g. objective=kd for the teacher)


# command -> (valid settings, slots); "{w}" is the world folder. Every command of `commands()` must be here.
COMMANDS: dict[str, tuple[list[str], dict[str, Slot]]] = {
    "run": (["{w}/pipeline.yaml", "out={o}/run-out"], {
        "config file": Slot(None, CONFIG_FILE), "data.corpus": Slot("data.corpus", CORPUS),
        "data.tokenizer": Slot("data.tokenizer", NAME_OR_FOLDER),
        "data.downstream": Slot("data.downstream", INPUT_FOLDER),
        "out": Slot("out", OUT_FOLDER)}),
    "report": ([], {"run_dir": Slot(None, INPUT_FOLDER)}),
    "demo": ([], {"out": Slot("out", OUT_FOLDER)}),
    "space": ([], {"name": Slot(None, SPACE_FILE)}),
    "train-supernet": (["corpus={w}/corpus.txt", "out={o}/ts-out", "cache_dir={o}/ts-cache", "space=cpu-mlm", *TRAIN], {
        "corpus": Slot("corpus", CORPUS), "tokenizer": Slot("tokenizer", NAME_OR_FOLDER),
        "teacher": Slot("teacher", NAME_OR_FOLDER, ("objective=kd", "space=cpu-kd", "tokenizer={w}/tok")),
        "out": Slot("out", OUT_FOLDER), "cache_dir": Slot("cache_dir", OUT_FOLDER)}),
    "train-model": (["model={w}/model", "corpus={w}/corpus.txt", "out={o}/tm-out", "cache_dir={o}/tm-cache", *TRAIN], {
        "model": Slot("model", MODEL_FOLDER), "corpus": Slot("corpus", CORPUS),
        "tokenizer": Slot("tokenizer", NAME_OR_FOLDER), "out": Slot("out", OUT_FOLDER)}),
    "prepare-corpus": (["corpus={w}/corpus.txt", "cache_dir={o}/pc-cache", "tokenizer_vocab_size=100",
                        "max_seq_length=16", "progress=false"], {
        "corpus": Slot("corpus", CORPUS), "tokenizer": Slot("tokenizer", NAME_OR_FOLDER),
        "cache_dir": Slot("cache_dir", OUT_FOLDER)}),
    "extract": (["supernet={w}/supernet", f"arch={ARCH}", "out={o}/ex-out"], {
        "supernet": Slot("supernet", SUPERNET_FOLDER), "out": Slot("out", OUT_FOLDER)}),
    "latency measure": (["space={w}/space.yaml", "n=1", "out={o}/measure.jsonl", "progress=false"], {
        "space": Slot("space", SPACE_FILE), "out": Slot("out", OUT_FILE)}),
    "latency fit": (["{w}/lat.jsonl", "out={o}/fit.json"], {
        "files": Slot(None, INPUT_FILE), "test": Slot("test", INPUT_FILE), "out": Slot("out", OUT_FILE)}),
    "latency bench": ([ARCH], {"predictor": Slot("predictor", INPUT_FILE)}),
    "search": (["speedup=5000", f"predictor={FLOPS}", "supernet={w}/supernet", "out={o}/search-out", "progress=false",
                "plot=false", "population=2", "generations=1"], {
        "supernet": Slot("supernet", SUPERNET_FOLDER), "predictor": Slot("predictor", INPUT_FILE),
        "out": Slot("out", OUT_FOLDER)}),
    "rank-eval": (["{w}/a.jsonl", "{w}/b.jsonl"], {"a": Slot(None, INPUT_FILE)}),
    "finetune": (["model={w}/model", "task=sst2", "data={w}/glue", "out={o}/ft-out", "max_steps=1", "progress=false"], {
        "model": Slot("model", MODEL_FOLDER), "data": Slot("data", INPUT_FOLDER), "out": Slot("out", OUT_FOLDER)}),
    "evaluate": (["model={w}/model", "tasks=sst2", "data={w}/glue", "out={o}/ev-out", "max_steps=1",
                  "progress=false"], {
        "model": Slot("model", MODEL_FOLDER), "data": Slot("data", INPUT_FOLDER), "out": Slot("out", OUT_FOLDER)}),
    "export": (["{w}/model"], {"model": Slot(None, MODEL_FOLDER)}),
}
# A command missing from the table gets its slots from its config class: every path setting, with the kinds that
# are bad whatever it expects (missing, a binary file, an empty folder; outputs: unwritable, under a file).
GENERIC_INPUT = {"missing": "no-such-path", "binary": "binary.bin", "empty": "empty-folder"}
GENERIC_OUTPUT = {"unwritable": "@unwritable", "under a file": "a-file/out"}
OUTPUT_KEYS = ("out", "cache_dir")


def table(command) -> tuple[list[str], dict[str, Slot]]:
    if command.name in COMMANDS:
        return COMMANDS[command.name]
    cls = command.config_class()
    slots = {}
    for name, field in cls.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("path"):
            key = None if extra.get("positional") else name
            slots[name] = Slot(key, GENERIC_OUTPUT if name in OUTPUT_KEYS else GENERIC_INPUT)
    return [], slots


def cases() -> list[tuple[str, str, str]]:
    """(command, slot, kind) for every slot of every command, and a bad --config file for every command."""
    out = []
    for command in commands():
        _, slots = table(command)
        for slot_name, slot in slots.items():
            out += [(command.name, slot_name, kind) for kind in slot.kinds]
        if not command.config_positional:
            out += [(command.name, "--config", kind) for kind in CONFIG_FILE]
    return out


CASES = cases()


def test_every_command_gets_bad_inputs():
    tried = {c for c, _, _ in CASES}
    assert tried == {c.name for c in commands()}
    assert len(CASES) >= 150


def _value(world: Path, kind_value: str, case_id: str) -> str:
    if kind_value == "@unwritable":
        return str(UNWRITABLE_ROOT / case_id)
    if kind_value.startswith("./"):  # a path-like name (tokenizer, space): relative to the cwd, the world
        return kind_value
    return str(world / kind_value)


def case_id(command: str, slot_name: str, kind: str) -> str:
    return f"{command}-{slot_name}-{kind}".replace(" ", "_").replace(".", "_")


def _argv(world: Path, command: str, slot_name: str, kind: str) -> tuple[list[str], str]:
    """The command line of one case (valid settings, one of them bad) and the bad value."""
    valid, slots = table(next(c for c in commands() if c.name == command))
    outs = world / "outs" / case_id(command, slot_name, kind)
    args = [a.replace("{w}", str(world)).replace("{o}", str(outs)) for a in valid]
    case = case_id(command, slot_name, kind)
    if slot_name == "--config":
        bad = _value(world, CONFIG_FILE[kind], case)
        return [*command.split(), *args, "--config", bad], bad
    slot = slots[slot_name]
    bad = _value(world, slot.kinds[kind], case)
    extra = [a.replace("{w}", str(world)) for a in slot.extra]
    if slot.key is None:  # positional: replaces the valid one (the first)
        positional = [a for a in args if "=" not in a]
        settings = [a for a in args if "=" in a]
        args = [bad, *positional[1:], *settings] if positional else [bad, *settings]
    else:
        prefix = slot.key + "="
        args = [a for a in args if not a.startswith(prefix) and not any(a.startswith(e.split("=")[0] + "=")
                                                                          for e in extra)]
        args += [*extra, prefix + bad]
    return [*command.split(), *args], bad


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if any(m in p.name for m in (".staging-", ".old-",
                                                                               ".autotinybert-write-test-")))


@pytest.mark.parametrize("command,slot,kind", CASES, ids=[f"{c}|{s}|{k}" for c, s, k in CASES])
def test_bad_input_gives_one_error_line_and_exit_2(world, command, slot, kind, capsys, monkeypatch):
    monkeypatch.chdir(world)
    (world / "space.yaml").write_text(yaml.safe_dump({**SPACE, "name": "tiny"}))
    in_the_way = (world / "a-file").read_bytes()
    argv, bad = _argv(world, command, slot, kind)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"{argv}: exit {code}\n{err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    named = {bad, os.path.basename(bad.rstrip("/")), str(Path(bad).parent) if kind == "under a file" else bad}
    assert any(n in errors[0] for n in named), f"the error does not name {bad}: {errors[0]}"
    assert (world / "a-file").read_bytes() == in_the_way
    assert _leftovers(world) == []
    outs = world / "outs" / case_id(command, slot, kind)  # the valid outputs of the case: nothing written there
    assert not outs.exists() or not [p for p in outs.rglob("*") if p.is_file()], sorted(outs.rglob("*"))
