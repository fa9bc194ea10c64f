"""Same corpus and settings -> the same tokenizer; same config and seed -> the same run folder, byte for byte apart
from timing fields. Each run is a separate process (the `tokenizers` trainer's hash seeds differ per process; that
is what made the vocabulary differ from run to run)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SPACE = {"attention": "heads", "layers": [1, 2], "hidden": [16, 32, 16], "ffn": [32, 64, 32], "heads": [1, 2],
         "head_size": 16}
TIMING_KEYS = {"time", "seconds", "tokens_per_s", "wall_s", "finished", "examples_per_s"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Text with many equal-count words and pairs: the ties whose order the trainer used to draw at random."""
    import numpy as np

    root = tmp_path_factory.mktemp("determinism")
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=rng.integers(2, 9))) for _ in range(400)]
    docs = ("\n".join(" ".join(rng.choice(words, size=12)) + " ." for _ in range(5)) for _ in range(150))
    (root / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    return root


def _python(code: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", code, *args], check=True)


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "autotinybert", *args], check=True, stdout=subprocess.DEVNULL)


def test_a_tokenizer_trained_twice_is_byte_identical(corpus, tmp_path):
    code = ("import sys\nfrom autotinybert.data.corpus import list_corpus_files\n"
            "from autotinybert.data.tokenizer import train_wordpiece\n"
            "train_wordpiece(list_corpus_files(sys.argv[1]), sys.argv[2], vocab_size=400)\n")
    for i in range(3):
        _python(code, str(corpus / "corpus.txt"), str(tmp_path / f"tok{i}"))
    files = {i: {p.name: p.read_bytes() for p in (tmp_path / f"tok{i}").iterdir()} for i in range(3)}
    assert files[0] == files[1] == files[2]
    vocab = files[0]["vocab.txt"].decode().splitlines()
    assert len(vocab) == 400 and vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(set(vocab)) == len(vocab)


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def comparable(root: Path) -> dict[str, str]:
    """Relative path -> content hash, JSON / JSONL files with their timing fields removed."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            data = json.dumps(_without_timings(json.loads(data))).encode()
        elif p.suffix == ".jsonl":
            lines = data.decode().splitlines()
            data = "\n".join(json.dumps(_without_timings(json.loads(line))) for line in lines).encode()
        out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def test_same_config_and_seed_twice_give_the_same_vocabulary_weights_and_files(corpus, tmp_path):
    """Two runs of one train-supernet config (same out, a fresh tokenizer cache each): identical vocab.txt,
    model.safetensors, checkpoints (weights and AdamW state), configs and the cached corpus arrays; the only
    differences allowed are timing fields."""
    args = [f"corpus={corpus / 'corpus.txt'}", f"out={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}",
            f"space={corpus / 'space.yaml'}", "tokenizer_vocab_size=300", "max_seq_length=24", "batch_size=8",
            "archs_per_step=2", "max_steps=4", "checkpoint_every=2", "eval_every=2", "eval_sequences=8",
            "val_fraction=0.1", "val_max_sequences=16", "threads=1", "progress=false", "device=cpu", "seed=3"]
    _cli("train-supernet", *args)
    (tmp_path / "run").rename(tmp_path / "first")
    (tmp_path / "cache").rename(tmp_path / "first-cache")
    _cli("train-supernet", *args)
    first, second = comparable(tmp_path / "first"), comparable(tmp_path / "run")
    assert first == second
    assert comparable(tmp_path / "first-cache") == comparable(tmp_path / "cache")
    for name in ("vocab.txt", "model.safetensors", "tokenizer.json", "validation.safetensors"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "run" / name).read_bytes(), name
    assert any(k.startswith("checkpoints/") and k.endswith("optimizer.safetensors") for k in first)
