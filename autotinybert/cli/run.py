"""`autotinybert run CONFIG.yaml [key=value ...]` and `autotinybert report RUN_DIR`."""

from __future__ import annotations

import argparse

ORDER = 10

_EPILOG = """examples:
  autotinybert run configs/cpu-mlm.yaml
  autotinybert run configs/cpu-mlm.yaml search.speedups=[4,10] supernet.max_steps=2000 out=runs/cpu-mlm-b
  autotinybert run configs/cpu-mlm.yaml                       # again: completed stages are skipped
  autotinybert report runs/cpu-mlm                            # rebuild RUN_DIR/report.md and its plots
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run the whole pipeline from a YAML config (tokenize ... report)",
        description="Tokenize, train the supernet, measure latencies, fit the predictor, search one arch per "
                    "speedup target (and, with search.fast, the fast-rule pick), extract it and its "
                    "conventional-rule baseline, further-train them, fine-tune, report. Each stage writes "
                    "RUN_DIR/<stage>/ with config.json and DONE.json: a rerun skips completed stages, resumes "
                    "an interrupted one and redoes only what a config change touches.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="pipeline YAML file (see configs/ and docs/pipeline.md)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. search.population=10")
    p.set_defaults(func=_run)

    r = subparsers.add_parser("report", help="rebuild RUN_DIR/report.md and its plots from a pipeline run")
    r.add_argument("run_dir", help="the pipeline's run folder (`out` in its config)")
    r.set_defaults(func=_report)


def _run(args) -> int:
    import os

    from ..pipeline.config import PipelineConfig
    from ..pipeline.run import run_pipeline

    config = PipelineConfig.load(args.config, args.overrides)  # every config error before any stage starts
    result = run_pipeline(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        _print_summary(result.run_dir, result.report)
    return 0


def _report(args) -> int:
    from ..pipeline.report import write_report

    _print_summary(args.run_dir, write_report(args.run_dir))
    return 0


def _print_summary(run_dir, report) -> None:
    from ..pipeline.report import summary_text

    print(summary_text(run_dir))
    print(f"\nreport: {report}")
