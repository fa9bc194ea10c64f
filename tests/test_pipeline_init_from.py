"""`run_pipeline` with supernet.init_from (a tiny BERT checkpoint built here): the space, tokenizer, objective and
teachers default to the checkpoint's; targets are speedups over the checkpoint, timed in the same campaigns as
BERT-base; the checkpoint is fine-tuned as the reference row; a checkpoint the space does not fit in is refused
before any stage starts."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from autotinybert.demo import build_demo_data
from autotinybert.pipeline.config import ConfigError, PipelineConfig
from autotinybert.pipeline.report import summary_text
from autotinybert.pipeline.run import run_pipeline

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_checkpoint(folder: Path, corpus: Path) -> Path:
    """A 3-32-64-4-32 BertModel (head size 8) whose vocabulary is the corpus's 300 most frequent words."""
    words = Counter(re.findall(r"[a-z]+|[^\sa-z0-9]", corpus.read_text().lower()))
    vocab = SPECIAL + [w for w, _ in words.most_common(300)]
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_init")
    build_demo_data(root / "data", seed=0, train_pairs=120, dev_pairs=48)
    make_checkpoint(root / "bert", root / "data" / "corpus.txt")
    return root


def config(root: Path, **supernet) -> dict:
    return {
        "out": str(root / "run"), "seed": 0, "progress": False,
        "data": {"corpus": [str(root / "data" / "corpus.txt")], "downstream": str(root / "data"),
                 "max_seq_length": 32, "val_max_sequences": 32, "cache_dir": str(root / "cache")},
        "supernet": {"init_from": str(root / "bert"), "batch_size": 8, "archs_per_step": 2, "max_steps": 4,
                     "eval_every": 4, "eval_sequences": 8, "checkpoint_every": 2, "threads": 1,
                     "calibration_batches": 2, **supernet},
        "latency": {"archs": 20, "warmup": 1, "repeats": 2, "budget_s": 0, "seq_len": 32, "clock": "cpu", "baseline_head_size": 8},
        "predictor": {"kind": "analytic", "folds": 3},
        "search": {"speedups": [1.5], "speedup_over": "init", "window": [0.3, 3.0], "evaluator": "loss",
                   "loss_max_sequences": 8, "population": 4, "generations": 1, "top_k": 1, "threads": 1,
                   "plot": False},
        "further_train": {"batch_size": 8, "max_steps": 2, "eval_every": 2, "eval_sequences": 8,
                          "checkpoint_every": 2, "threads": 1, "top_k": 1},
        "baselines": {"latency_candidates": 2},
        "finetune": {"tasks": ["docpair"],
                     "config": {"learning_rate": 1e-3, "epochs": 1, "batch_size": 16, "max_seq_length": 32,
                                "max_train_examples": 32, "max_eval_examples": 24, "threads": 1}},
    }


def test_the_checkpoint_sets_the_defaults(root):
    cfg = PipelineConfig.load(config(root))
    bert = str(root / "bert")
    assert cfg.data.tokenizer == bert  # its own vocabulary, no WordPiece trained on the corpus
    assert (cfg.supernet.space, cfg.supernet.objective, cfg.supernet.teacher) == ("from-init", "kd", bert)
    assert (cfg.further_train.objective, cfg.further_train.teacher) == ("kd", bert)
    assert str(cfg.supernet.search_space().max_arch) == "3-32-64-4-32"
    # a key the user sets is kept
    mlm = PipelineConfig.load(config(root), ["further_train.objective=mlm"])
    assert mlm.further_train.objective == "mlm" and mlm.further_train.teacher is None


def test_targets_over_the_checkpoint_need_one(root):
    data = config(root)
    del data["supernet"]["init_from"]
    data["data"]["tokenizer"] = str(root / "bert")
    with pytest.raises(ConfigError, match="speedup_over=init measures the targets against the supernet.init_from"):
        PipelineConfig.load(data)


def test_a_space_larger_than_the_checkpoint_is_refused_before_any_stage(root, tmp_path):
    data = config(root, space={"attention": "heads", "layers": [1, 4], "hidden": [16, 32, 16], "ffn": [32, 64, 32],
                               "heads": [1, 4], "head_size": 8})
    data["out"] = str(tmp_path / "run")
    with pytest.raises(ConfigError, match="supernet.init_from: .*layers"):
        PipelineConfig.load(data)
    assert not (tmp_path / "run").exists()


def test_pipeline_from_a_checkpoint(root):
    lines = []
    result = run_pipeline(PipelineConfig.load(config(root)), log=lines.append)
    run_dir = root / "run"
    campaign = [json.loads(x) for x in (run_dir / "latency" / "latency.jsonl").read_text().splitlines()]
    init_rows = [r for r in campaign if r["role"] == "init"]
    assert [r["arch"] for r in init_rows] == ["3-32-64-4-32"]  # timed beside BERT-base in the campaign

    # the search aims at init_ms / 1.5, i.e. 1.5 x (BERT-base / init) over BERT-base, from the same campaign
    latency = json.loads((run_dir / "latency" / "DONE.json").read_text())["outputs"]
    search = json.loads((run_dir / "search-1.5x" / "config.json").read_text())
    expected = 1.5 * latency["reference_ms"] / latency["init_ms"]
    assert search["config"]["speedup"] == pytest.approx(expected)

    models = {m.kind: m for m in result.models}
    assert sorted(models) == ["conventional-inherited", "conventional-scratch", "init", "searched"]
    init = models["init"]
    assert init.arch == "3-32-64-4-32" and init.trained_dir == str(root / "bert")
    assert set(init.scores) == {"docpair"}  # the checkpoint itself fine-tuned as the reference row
    for m in result.models:  # every speedup over the checkpoint comes from the same interleaved run
        assert m.measured_speedup_init == pytest.approx(init.measured_ms / m.measured_ms)
        assert m.measured_speedup == pytest.approx(json.loads((run_dir / "extract" / "models.json").read_text())
                                                   ["reference_ms"] / m.measured_ms)

    # KD from the checkpoint in every training run of the pipeline
    searched = models["searched"]
    for m in (searched, models["conventional-scratch"]):
        run = json.loads((Path(m.trained_dir) / "train_config.json").read_text())
        assert run["objective"] == "kd" and Path(run["teacher"]) == root / "bert"

    text = summary_text(run_dir)
    assert text.splitlines()[2].startswith("init ") and "vs init" in text.splitlines()[0]
    assert f"searched-1.5x `{searched.arch}`: {100 * searched.score:.1f} = " \
           f"{100 * searched.score / init.score:.1f} % of the init model's {100 * init.score:.1f}, " \
           f"{searched.measured_speedup_init:.2f}x faster than it" in text
    report = (run_dir / "report.md").read_text()
    assert "The init_from checkpoint `3-32-64-4-32`" in report and "Targets are speedups over init" in report
    assert "| init | init | 3-32-64-4-32 |" in report
