"""`autotinybert train-supernet` / `train-model` / `prepare-corpus`. Under ``torchrun --nproc_per_node N -m
autotinybert train-supernet ...`` the N processes are the Algorithm-1 workers (one gradient all-reduce per step)."""

from __future__ import annotations

import json
import os

from . import Command


def _train(config) -> int:
    from ..train import train_model, train_supernet
    from ..train.config import TrainSupernetConfig

    out = (train_supernet if isinstance(config, TrainSupernetConfig) else train_model)(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {out}")
    return 0


def _prepare(config) -> int:
    from ..data import prepare_corpus

    corpus = prepare_corpus(config.corpus, config.tokenizer, max_seq_length=config.max_seq_length,
                            cache_dir=config.cache_dir, val_fraction=config.val_fraction,
                            val_max_sequences=config.val_max_sequences,
                            tokenizer_vocab_size=config.tokenizer_vocab_size, progress=config.progress)
    print(json.dumps({"cache": str(corpus.cache_dir), "tokenizer": str(corpus.tokenizer_dir),
                      "train_sequences": len(corpus.train), "validation_sequences": len(corpus.validation),
                      **corpus.stats}, indent=2))
    return 0


COMMANDS = [
    Command("train-supernet", "one-shot training of a SuperBERT (Algorithm 1; MLM or KD; multi-process via torchrun)",
            "autotinybert.train.config:TrainSupernetConfig", _train,
            examples=("autotinybert train-supernet corpus=data/ tokenizer=bert-dir space=cpu-mlm out=runs/supernet "
                      "max_steps=2000",
                      "autotinybert train-supernet --config configs/train-supernet.yaml corpus=data/ out=runs/s",
                      "torchrun --nproc_per_node 2 -m autotinybert train-supernet ...")),
    Command("train-model", "further training of one extracted model (MLM or KD; no warm-up)",
            "autotinybert.train.config:TrainModelConfig", _train,
            examples=("autotinybert train-model model=runs/best corpus=data/ out=runs/best-trained max_steps=5000",)),
    Command("prepare-corpus", "tokenize + pack a corpus into the memory-mapped cache (the 'tokenize' stage)",
            "autotinybert.data.config:PrepareCorpusConfig", _prepare,
            examples=("autotinybert prepare-corpus corpus=/data/corpus tokenizer=bert-dir cache_dir=cache",)),
]
