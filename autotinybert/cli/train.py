"""`autotinybert train-supernet` / `train-model`: one-shot SuperBERT training and further training of one model.

Every key of the config dataclasses is an option (``--batch-size 64``); ``--config FILE.yaml`` gives a base that
options override. Run under ``torchrun --nproc_per_node N -m autotinybert train-supernet ...`` for DDP.
"""

from __future__ import annotations

import argparse
import dataclasses

ORDER = 10

_HELP = {
    "out": "run folder (a loadable supernet / model folder when done)",
    "corpus": "text files or folders (plain, WikiExtractor <doc>, Project Gutenberg)",
    "tokenizer": "Hugging Face tokenizer folder or name (default: train WordPiece on the corpus)",
    "space": "search space: preset name (mlm, kd, cpu-mlm, cpu-kd) or YAML file",
    "objective": "mlm or kd",
    "teacher": "kd teacher: BERT-like model folder or name (AutoModel)",
    "model": "extracted model folder to train further",
    "batch_size": "global sequences per optimizer step",
    "workers": "Algorithm-1 workers N (default: number of processes)",
    "archs_per_step": "M: archs each worker trains per step",
    "stop_after": "stop with a checkpoint after this step (resume later with --resume)",
    "time_budget_s": "stop with a checkpoint after this many seconds",
}


def _add_options(parser: argparse.ArgumentParser, cls) -> None:
    parser.add_argument("--config", help="YAML file with config keys; options given here override it")
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = _HELP.get(f.name, "")
        if f.name == "corpus":
            parser.add_argument(flag, nargs="+", default=None, help=help_text)
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default: {default})".strip())
        else:
            kind = {"int": int, "float": float}.get(type(default).__name__, None)
            if kind is None:
                kind = _guess_type(f.type)
            parser.add_argument(flag, type=kind, default=None, help=f"{help_text} (default: {default})".strip())


def _guess_type(annotation: str):
    text = str(annotation)
    if text.startswith("int"):
        return int
    if text.startswith("float"):
        return float
    return str


def register(subparsers) -> None:
    from ..train.config import TrainModelConfig, TrainSupernetConfig

    p = subparsers.add_parser(
        "train-supernet", help="one-shot training of a SuperBERT (Algorithm 1; MLM or KD; DDP via torchrun)",
        description="Train a SuperBERT over a search space: every step each worker trains M sampled sub-models "
                    "on its sub-batch. Example: autotinybert train-supernet --corpus data/ --tokenizer bert-dir "
                    "--space cpu-mlm --out runs/supernet --max-steps 2000. Under torchrun --nproc_per_node N "
                    "the N processes are the workers (DDP: gloo on CPU, nccl on CUDA).")
    _add_options(p, TrainSupernetConfig)
    p.set_defaults(func=lambda args: _run(args, "supernet"))
    q = subparsers.add_parser(
        "train-model", help="further training of one extracted model (MLM or KD)",
        description="Continue training a standalone model written by `autotinybert extract` with the same data "
                    "pipeline, objectives, DDP and checkpoints (no warm-up by default). Example: autotinybert "
                    "train-model --model runs/best --corpus data/ --out runs/best-trained --max-steps 5000")
    _add_options(q, TrainModelConfig)
    q.set_defaults(func=lambda args: _run(args, "model"))
    r = subparsers.add_parser(
        "prepare-corpus", help="tokenize + pack a corpus into the memory-mapped cache (the training 'tokenize' stage)",
        description="Run the data pipeline alone, e.g. before a multi-node torchrun job. A training run with the "
                    "same corpus, tokenizer, length and split settings reuses the cache. Example: autotinybert "
                    "prepare-corpus --corpus /data/corpus --tokenizer bert-dir --cache-dir cache")
    r.add_argument("--corpus", nargs="+", required=True, help=_HELP["corpus"])
    r.add_argument("--tokenizer", help=_HELP["tokenizer"])
    r.add_argument("--tokenizer-vocab-size", type=int, default=8000)
    r.add_argument("--max-seq-length", type=int, default=128)
    r.add_argument("--cache-dir", help="cache folder (default $AUTOTINYBERT_CACHE or ~/.cache/autotinybert)")
    r.add_argument("--val-fraction", type=float, default=0.01)
    r.add_argument("--val-max-sequences", type=int, default=2000)
    r.set_defaults(func=_prepare)


def _prepare(args) -> int:
    import json

    from ..data import prepare_corpus

    corpus = prepare_corpus(args.corpus, args.tokenizer, max_seq_length=args.max_seq_length, cache_dir=args.cache_dir,
                            val_fraction=args.val_fraction, val_max_sequences=args.val_max_sequences,
                            tokenizer_vocab_size=args.tokenizer_vocab_size)
    print(json.dumps({"cache": str(corpus.cache_dir), "tokenizer": str(corpus.tokenizer_dir),
                      "train_sequences": len(corpus.train), "validation_sequences": len(corpus.validation),
                      **corpus.stats}, indent=2))
    return 0


def _run(args, kind: str) -> int:
    from ..train import train_model, train_supernet
    from ..train.config import TrainModelConfig, TrainSupernetConfig

    cls = TrainSupernetConfig if kind == "supernet" else TrainModelConfig
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    config = cls.from_yaml(args.config, **overrides) if args.config else cls.from_dict(overrides)
    out = (train_supernet if kind == "supernet" else train_model)(config)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {out}")
    return 0
