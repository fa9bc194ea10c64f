"""`autotinybert run CONFIG.yaml [key=value ...]` and `autotinybert report RUN_DIR`."""

from __future__ import annotations

import os

from ..config import Config, PathStr, path_field
from . import Command


class ReportConfig(Config):
    """Rebuild RUN_DIR/report.md and its plots from a pipeline run, and print its summary."""

    run_dir: PathStr = path_field("", positional=True, min_length=1)
    """The pipeline's run folder (`out` in its config)."""


def _run(config) -> int:
    from ..pipeline.run import run_pipeline

    result = run_pipeline(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        _print_summary(result.run_dir, result.report)
    return 0


def _report(config: ReportConfig) -> int:
    from ..pipeline.report import write_report

    _print_summary(config.run_dir, write_report(config.run_dir))
    return 0


def _print_summary(run_dir, report) -> None:
    from ..pipeline.report import summary_text

    print(summary_text(run_dir))
    print(f"\nreport: {report}")


COMMANDS = [
    Command("run", "run the whole pipeline from a YAML config (tokenize ... report)",
            "autotinybert.pipeline.config:PipelineConfig", _run, config_positional=True,
            examples=("autotinybert run configs/cpu-mlm.yaml",
                      "autotinybert run configs/cpu-mlm.yaml search.speedups=[30,60] supernet.max_steps=2000 "
                      "out=runs/cpu-mlm-b",
                      "autotinybert run configs/cpu-mlm.yaml supernet.space.layers.max=3",
                      "autotinybert run configs/cpu-mlm.yaml      # again: completed stages are skipped")),
    Command("report", "rebuild RUN_DIR/report.md and its plots from a pipeline run", f"{__name__}:ReportConfig",
            _report, examples=("autotinybert report runs/cpu-mlm",)),
]
