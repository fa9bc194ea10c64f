"""`autotinybert demo [key=value ...]`: the whole pipeline, offline, in a few minutes on a laptop CPU."""

from __future__ import annotations

from . import Command


def _demo(config) -> int:
    from transformers.utils import logging as hf_logging

    from ..pipeline.demo import run_demo

    hf_logging.set_verbosity_error()  # the head/pooler "MISSING" notes are expected when fine-tuning an MLM folder
    run_demo(config)
    return 0


def _embedded():
    from ..pipeline.config import DemoConfig

    return DemoConfig.embedded()


COMMANDS = [Command("demo", "run the whole pipeline offline on a built-in docstring corpus (a few minutes on 2 cores)",
                    "autotinybert.pipeline.config:DemoConfig", _demo, defaults=_embedded,
                    examples=("autotinybert demo", "autotinybert demo out=runs/demo2 search.fast=true"))]
