"""Cheap checks before the work, and quiet, sensible defaults: binary corpus files refused; a predictor refuses a
search beyond the space it was fitted on (the space is recorded in the predictor file); a KD teacher whose
vocabulary differs from data.tokenizer fails before the first stage, naming data.tokenizer; the report flags
majority-class scores and speedups 20 % off target; `search` defaults to the loss evaluator; transformers' bars
and loading tables stay quiet with progress=false."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from autotinybert.cli import main
from autotinybert.data.corpus import CorpusError, check_text

TINY = {"name": "tiny", "attention": "heads", "layers": [1, 2], "hidden": [128, 192, 64], "ffn": [128, 512, 128],
        "heads": [1, 3], "head_size": 64}
WORDS = "the a cat dog sat ran on under mat table quickly slowly red blue big small house garden tree".split()


def score(arch) -> float:
    return arch.hidden / 256 + 0.1 * arch.layers


# ------------------------------------------------------------------------------------------------ corpus files
def test_binary_and_non_text_corpus_files_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "random.txt").write_bytes(bytes(rng.integers(1, 256, 5000, dtype=np.uint8)))  # no NUL byte at all
    (tmp_path / "elf").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(200))
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 au lait, a word or two with an accent.\n".encode("latin-1") * 50)
    (tmp_path / "utf8.txt").write_text("Café, naïve, 東京: text in UTF-8.\n" * 50, encoding="utf-8")
    with pytest.raises(CorpusError, match="random.txt is not UTF-8 text"):
        check_text(tmp_path / "random.txt")
    with pytest.raises(CorpusError, match="elf is binary"):
        check_text(tmp_path / "elf")
    check_text(tmp_path / "utf8.txt")
    with pytest.raises(CorpusError, match="latin1.txt is not UTF-8"):  # 1 of every 45 characters undecodable
        check_text(tmp_path / "latin1.txt")


# ------------------------------------------------------------------------------------------------ the predictor
def _latency_file(path: Path, space: dict) -> None:
    """Rows as `latency measure` writes them (the space's definition on every line); latencies are an analytic
    cost, no timing."""
    from autotinybert import BERT_BASE, SearchSpace
    from autotinybert.latency.device import device_record
    from autotinybert.latency.measure import LatencyRecord
    from autotinybert.search import FlopsLatencyModel

    s, flops, rng = SearchSpace.from_dict(space), FlopsLatencyModel(reference_ms=80.0), np.random.default_rng(0)
    device = device_record()
    rows = [{"kind": "reference", **LatencyRecord(BERT_BASE, 80.5, 0.1, 3, is_reference=True).to_dict()}]
    rows += [{"kind": "arch", **LatencyRecord(a, flops.predict(a) + 0.5, 0.01, 3).to_dict()}
             for a in {s.sample(rng) for _ in range(40)}]
    path.write_text("".join(json.dumps({**r, "space": s.name, "space_def": s.to_dict(), "device": device}) + "\n"
                            for r in rows))


def test_a_predictor_records_its_space_and_refuses_a_search_beyond_it(tmp_path, capsys, monkeypatch):
    from autotinybert import SearchSpace
    from autotinybert.latency import LatencyPredictor

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    _latency_file(tmp_path / "lat.jsonl", TINY)
    assert main(["latency", "fit", str(tmp_path / "lat.jsonl"), f"out={tmp_path / 'p.json'}", "kind=analytic",
                 "folds=3"]) == 0
    predictor = LatencyPredictor.load(tmp_path / "p.json")
    assert SearchSpace.from_dict(predictor.space) == SearchSpace.from_dict(TINY)
    predictor.check_space(SearchSpace.from_dict({**TINY, "layers": [1, 1]}))  # a sub-space is fine
    capsys.readouterr()
    code = main(["search", "space=cpu-mlm", f"predictor={tmp_path / 'p.json'}", "speedup=20",
                 "evaluator=test_preflight:score", f"out={tmp_path / 'search'}", "progress=false"])
    err = capsys.readouterr().err
    assert code == 2 and "reaches beyond it" in err and "ffn 128..1024 (fitted 128..512)" in err
    assert not (tmp_path / "search").exists()


# ------------------------------------------------------------------------------------------------ the teacher
@pytest.fixture(scope="module")
def pipeline_files(tmp_path_factory) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("preflight")
    rng = np.random.default_rng(0)
    docs = ("\n".join(" ".join(rng.choice(WORDS, size=10)) + " ." for _ in range(4)) for _ in range(40))
    (root / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    (root / "glue" / "SST-2").mkdir(parents=True)
    (root / "glue" / "SST-2" / "dev.tsv").write_text("sentence\tlabel\n" + "good\t1\n" * 3 + "bad\t0\n")
    (root / "glue" / "SST-2" / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    for name, words in (("teacher", WORDS), ("other-tok", list(reversed(WORDS)))):
        (root / f"{name}.vocab").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
        tok = BertTokenizerFast(vocab=str(root / f"{name}.vocab"))
        tok.save_pretrained(root / name)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=32)).save_pretrained(root / "teacher")
    (root / "run.yaml").write_text(yaml.safe_dump({
        "out": str(root / "run"), "progress": False,
        "data": {"corpus": [str(root / "corpus.txt")], "downstream": str(root / "glue")},
        "supernet": {"space": "cpu-kd", "objective": "kd", "teacher": str(root / "teacher")}}))
    return root


@pytest.mark.parametrize("tokenizer,words", [(None, "data.tokenizer is null"),
                                             ("other-tok", "another vocabulary than data.tokenizer")])
def test_a_teacher_with_another_vocabulary_fails_before_the_first_stage(pipeline_files, tokenizer, words, capsys):
    root = pipeline_files
    argv = ["run", str(root / "run.yaml")]
    if tokenizer is not None:
        argv.append(f"data.tokenizer={root / tokenizer}")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and f"data.tokenizer={root / 'teacher'}" in err and "--tokenizer" not in err
    assert not (root / "run").exists()


# ------------------------------------------------------------------------------------------------ the report
def test_the_report_flags_majority_class_scores_and_speedups_off_target(pipeline_files, tmp_path):
    from autotinybert.pipeline.report import flag_lines

    (tmp_path / "pipeline.json").write_text(json.dumps({"data": {"downstream": str(pipeline_files / "glue")}}))
    models = [  # the dev set is 3 x label 1, 1 x label 0: majority-class accuracy 75 %
        {"name": "searched-4x", "speedup_target": 4.0, "measured_speedup": 3.1, "scores": {"sst2": 0.75}},
        {"name": "fast-4x", "speedup_target": 4.0, "measured_speedup": 3.5, "scores": {"sst2": 1.0}},
        {"name": "conventional-4x", "speedup_target": 4.0, "measured_speedup": 4.9, "scores": {"sst2": 0.5}},
    ]
    flags = "\n".join(flag_lines(tmp_path, models))
    assert "searched-4x: measured speedup 3.1x is 22 % below its 4x target" in flags
    assert "conventional-4x: measured speedup 4.9x is 23 % above" in flags
    assert "fast-4x" not in flags  # 12 % off and well above the majority class
    assert "searched-4x on sst2: 75.0 is the majority-class rate of the dev set (75.0 %)" in flags
    assert "conventional-4x on sst2: 50.0" in flags  # below the majority class: flagged too


# ------------------------------------------------------------------------------------------------ defaults
def test_search_defaults_to_the_loss_evaluator(tmp_path, capsys):
    from autotinybert.search.config import SearchConfig

    assert SearchConfig.from_dict({"speedup": 2}).evaluator == "loss"
    assert SearchConfig.from_dict({"speedup": 2}).loss_max_sequences == 512  # capped: minutes, not hours
    code = main(["search", "space=cpu-mlm", "predictor=autotinybert.search.target:FlopsLatencyModel", "speedup=25",
                 f"out={tmp_path / 's'}", "progress=false"])
    assert code == 2 and "the loss evaluator needs a supernet folder (supernet=DIR)" in capsys.readouterr().err


def test_progress_false_keeps_transformers_quiet(pipeline_files, tmp_path):
    """No 'Writing model shards' bar, no 'Loading weights' bar, no LOAD REPORT table: only the command's lines."""
    from autotinybert import SearchSpace, SuperBertConfig, SuperBertForMaskedLM

    space = {"attention": "heads", "layers": [1, 2], "hidden": [16, 32, 16], "ffn": [32, 64, 32], "heads": [1, 2],
             "head_size": 16}
    SuperBertForMaskedLM(SuperBertConfig(space=SearchSpace.from_dict(space), vocab_size=len(WORDS) + 5,
                                         max_position_embeddings=64)).save_pretrained(
        tmp_path / "supernet", tokenizer_dir=pipeline_files / "teacher")
    commands = [
        ["extract", f"supernet={tmp_path / 'supernet'}", "arch=1-16-32-1-16", f"out={tmp_path / 'model'}"],
        ["finetune", f"model={tmp_path / 'model'}", "task=sst2", f"data={pipeline_files / 'glue'}",
         f"out={tmp_path / 'ft'}", "max_steps=1", "progress=false", "threads=1"],
    ]
    for argv in commands:
        done = subprocess.run([sys.executable, "-m", "autotinybert", *argv], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        output = done.stdout + done.stderr
        for noise in ("Writing model shards", "Loading weights", "LOAD REPORT", "it/s]"):
            assert noise not in output, (argv[0], output)
