"""The search's evaluator adapters against the real downstream fine-tuning and one-shot loss proxy."""

import json

import numpy as np
import pytest
import torch

from autotinybert import Arch, SearchSpace, SuperBertConfig, SuperBertForMaskedLM
from autotinybert.errors import UserError
from autotinybert.search import FinetuneEvaluator, FlopsLatencyModel, run_search

downstream = pytest.importorskip("autotinybert.downstream")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "same", "other"] + \
    "the a movie film plot was is it this that very quite story actors".split()
NEUTRAL = WORDS[9:]
TINY_SPACE = {"name": "tiny", "attention": "heads", "layers": [1, 2], "hidden": [16, 32, 16], "ffn": [32, 64, 32],
              "heads": [1, 2], "head_size": 16}
BUDGET = {"max_train_examples": 64, "max_steps": 6, "max_eval_examples": 32, "learning_rate": 3e-3,
          "batch_size": 16, "max_seq_length": 32, "threads": 1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny supernet folder with its tokenizer, and tiny SST-2 / MRPC files in GLUE's layout."""
    from transformers import BertTokenizer

    root = tmp_path_factory.mktemp("search_eval")
    torch.manual_seed(0)  # builds the fixture only; the code under test never touches the global RNG
    supernet = SuperBertForMaskedLM(SuperBertConfig(space=TINY_SPACE, vocab_size=len(WORDS), max_position_embeddings=64))
    supernet.save_pretrained(root / "supernet")
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(root / "supernet")
    rng = np.random.default_rng(0)

    def sentence(word):
        words = list(rng.choice(NEUTRAL, size=int(rng.integers(3, 7))))
        words.insert(int(rng.integers(0, len(words) + 1)), word)
        return " ".join(words)

    data = root / "data"
    for split, n in (("train", 96), ("dev", 32)):
        (data / "SST-2").mkdir(parents=True, exist_ok=True)
        labels = rng.integers(0, 2, size=n)
        (data / "SST-2" / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{sentence('good' if y else 'bad')}\t{y}\n" for y in labels))
        (data / "MRPC").mkdir(exist_ok=True)
        rows = "".join(f"{y}\t{i}\t{i + 1000}\t{sentence('same')}\t{sentence('same' if y else 'other')}\n"
                       for i, y in enumerate(rng.integers(0, 2, size=n)))
        (data / "MRPC" / f"{split}.tsv").write_text("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + rows)
    return root


def _config(tiny, **overrides):
    predictor = FlopsLatencyModel()
    middle = Arch(2, 32, 32, 1, 16)
    return {"supernet": str(tiny / "supernet"), "latency_ms": predictor.predict(middle), "window": [0.01, 100.0],
            "method": "random", "generations": 1, "population": 3, "evaluator": "finetune",
            "tasks": ["SST-2", "MRPC"], "data": str(tiny / "data"), "budget": BUDGET, "progress": False,
            "plot": False, **overrides}, predictor


def test_finetune_evaluator_scores_extracted_archs_and_fitness_is_the_mean(tiny, tmp_path):
    config, predictor = _config(tiny, out=str(tmp_path))
    result = run_search(config, predictor=predictor)
    assert len(result.candidates) == 3
    for record in result.candidates:
        assert set(record.scores) == {"sst2", "mrpc"}
        assert all(0.0 <= v <= 1.0 for v in record.scores.values())
        assert record.fitness == pytest.approx(sum(record.scores.values()) / 2)
        assert SearchSpace.from_dict(TINY_SPACE).contains(Arch.parse(record.arch))
    # the same arch scored again by a fresh evaluator: identical (seeded fine-tuning)
    first = result.candidates[0]
    evaluator = FinetuneEvaluator(str(tiny / "supernet"), ("SST-2", "MRPC"), str(tiny / "data"), budget=BUDGET)
    assert evaluator.evaluate(Arch.parse(first.arch)).scores == first.scores
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["evaluator"] == "finetune" and saved["config"]["budget"] == BUDGET


def test_finetune_evaluator_checks_tasks_data_and_budget_before_the_search(tiny, tmp_path):
    for overrides, words in [({"tasks": ["RTE"]}, "RTE"), ({"tasks": ["nope"]}, "nope"),
                             ({"budget": {"steps": 3}}, "unknown budget setting")]:
        config, predictor = _config(tiny, out=str(tmp_path / "x"), **overrides)
        with pytest.raises(UserError, match=words):
            run_search(config, predictor=predictor)
        assert not (tmp_path / "x" / "candidates.jsonl").exists()


# ----- the loss proxy (one-shot training's validation split) --------------------------------------------
@pytest.fixture(scope="module")
def trained_supernet(tmp_path_factory):
    """A supernet folder written by the one-shot trainer (a few steps on a tiny synthetic corpus)."""
    train = pytest.importorskip("autotinybert.train")
    root = tmp_path_factory.mktemp("search_loss")
    rng = np.random.default_rng(0)
    words = "the a cat dog sat ran on under mat table quickly slowly red blue big small house garden tree".split()
    paragraphs = (" ".join(" ".join(rng.choice(words, size=8)) + " ." for _ in range(4)) for _ in range(300))
    (root / "corpus.txt").write_text("\n\n".join(paragraphs))
    return train.train_supernet({
        "out": str(root / "supernet"), "corpus": [str(root / "corpus.txt")], "tokenizer_vocab_size": 100,
        "max_seq_length": 32, "space": TINY_SPACE, "batch_size": 8, "max_steps": 3, "val_fraction": 0.1,
        "val_max_sequences": 16, "device": "cpu", "threads": 1, "progress": False, "cache_dir": str(root / "cache"),
        "eval_every": 100, "eval_sequences": 8})


def test_loss_evaluator_fitness_is_minus_the_held_out_loss(trained_supernet, tmp_path):
    from autotinybert.train import LossProxy

    predictor = FlopsLatencyModel()
    result = run_search({"supernet": str(trained_supernet), "latency_ms": predictor.predict(Arch(2, 32, 32, 1, 16)),
                         "window": [0.01, 100.0], "method": "evolved", "generations": 2, "population": 3,
                         "evaluator": "loss", "out": str(tmp_path), "progress": False, "plot": False},
                        predictor=predictor)
    assert len(result.candidates) == 6 and len({r.arch for r in result.candidates}) == 6
    proxy = LossProxy(trained_supernet)
    for record in result.candidates:
        loss = proxy(Arch.parse(record.arch))
        assert record.scores == {"loss": pytest.approx(loss)} and record.fitness == pytest.approx(-loss)
        assert 0.0 < loss < 10.0
