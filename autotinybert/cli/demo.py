"""`autotinybert demo [--out DIR]`: the whole pipeline, offline, in a few minutes on a laptop CPU."""

from __future__ import annotations

ORDER = 5


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="run the whole pipeline offline on a built-in docstring corpus (a few minutes on 2 cores)",
        description="Builds an English corpus from the Python standard library's docstrings and the docpair task "
                    "(do two sentences come from the same docstring?), then runs the pipeline with a tiny "
                    "embedded config (autotinybert/configs/demo.yaml). No network, no other data.")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo); a rerun skips finished stages")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the demo config")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from transformers.utils import logging as hf_logging

    from ..pipeline.demo import run_demo

    hf_logging.set_verbosity_error()  # the head/pooler "MISSING" notes are expected when fine-tuning an MLM folder

    run_demo(args.out, args.overrides)
    return 0
