"""Expected loss values (torchtune-style): three tiny runs, the first 20 per-optimizer-step losses of each, compared
with the values recorded from the code before the training core was shared (tests/data/golden_losses.json).

    python tests/test_golden_losses.py      # re-record the expected values (only when a change is meant to move them)

The runs share a tiny corpus and a fixed 25-token vocabulary: (a) one-shot supernet training (MLM, dropout on,
2 archs per step, 20 steps, a warm-up of 0.14 x 20 = 2.8 steps, which the trainer floors to 2), (b) further training
of a model extracted from (a), (c) fine-tuning the model of (b) on a tiny SST-2-format task, evaluated every step so
that each history record holds one step's loss (26 steps with the default 10 % warm-up: 2.6 steps, which
fine-tuning rounds to 3).
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "data" / "golden_losses.json"
STEPS = 20
SPACE = {"attention": "heads", "layers": [1, 2], "hidden": [16, 32, 16], "ffn": [32, 64, 32], "heads": [1, 2],
         "head_size": 16}
WORDS = "the a cat dog sat ran on under mat table quickly slowly red blue big small house garden tree".split()


def _write_corpus(root: Path) -> Path:
    rng = np.random.default_rng(0)
    docs = ("\n".join(" ".join(rng.choice(WORDS, size=10)) + " ." for _ in range(6)) for _ in range(120))
    path = root / "corpus.txt"
    path.write_text("\n\n".join(docs) + "\n")
    return path


def _write_task(root: Path) -> Path:
    """SST-2 format: the label is whether 'cat' (1) or 'dog' (0) is in the sentence."""
    rng = np.random.default_rng(1)
    neutral = [w for w in WORDS if w not in ("cat", "dog")]
    folder = root / "glue" / "SST-2"
    folder.mkdir(parents=True)
    for split, n in (("train", 96), ("dev", 16)):
        rows = []
        for y in rng.integers(0, 2, size=n):
            words = list(rng.choice(neutral, size=6))
            words.insert(int(rng.integers(0, 7)), "cat" if y else "dog")
            rows.append(f"{' '.join(words)}\t{y}\n")
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    return root / "glue"


def _write_tokenizer(root: Path) -> Path:
    """A fixed WordPiece vocabulary (one trained on the corpus may order equal-count tokens differently from one
    process to the next, which would change every token id)."""
    from transformers import BertTokenizer

    folder = root / "tokenizer"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    return folder


def _train_config(root: Path, corpus: Path, out: str, **kw) -> dict:
    return {"out": str(root / out), "corpus": [str(corpus)], "tokenizer": str(root / "tokenizer"), "max_seq_length": 24,
            "cache_dir": str(root / "cache"), "batch_size": 8, "max_steps": STEPS, "learning_rate": 3e-3,
            "val_fraction": 0.1, "val_max_sequences": 16, "eval_every": 100, "eval_sequences": 8,
            "checkpoint_every": 100, "threads": 1, "progress": False, "device": "cpu", "seed": 7, **kw}


def _step_losses(run: Path) -> list[float]:
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in records if r["event"] == "step"][:STEPS]


def run_all(root: Path) -> dict[str, list[float]]:
    """The three tiny runs; name -> first 20 per-step training losses."""
    from autotinybert import SuperBertForMaskedLM, extract, save_extracted
    from autotinybert.downstream import finetune
    from autotinybert.train import train_model, train_supernet

    corpus = _write_corpus(root)
    _write_tokenizer(root)
    supernet_run = train_supernet(_train_config(root, corpus, "supernet", space=SPACE, archs_per_step=2,
                                                warmup_ratio=0.14))
    supernet = SuperBertForMaskedLM.from_pretrained(supernet_run)
    model_dir = save_extracted(extract(supernet, "2-32-64-2-32"), root / "extracted", tokenizer_dir=supernet_run)
    further_run = train_model({"model": str(model_dir), **_train_config(root, corpus, "further")})
    result = finetune(further_run, "sst2", _write_task(root), None,
                      {"learning_rate": 2e-3, "epochs": 4, "batch_size": 8, "max_steps": 26, "eval_every": 1,
                       "max_seq_length": 24, "seed": 5, "progress": False, "threads": 1})
    return {"supernet": _step_losses(supernet_run), "further": _step_losses(further_run),
            "finetune": [record.train_loss for record in result.history][:STEPS]}


@pytest.fixture(scope="module")
def losses(tmp_path_factory) -> dict[str, list[float]]:
    return run_all(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("name", ["supernet", "further", "finetune"])
def test_losses_match_the_recorded_values(losses, name):
    expected = json.loads(GOLDEN.read_text())[name]
    assert len(expected) == len(losses[name]) == STEPS
    assert losses[name] == pytest.approx(expected, abs=1e-6, rel=0)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        values = run_all(Path(tmp))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(values, indent=1) + "\n")
    print(json.dumps(values), file=sys.stderr)
