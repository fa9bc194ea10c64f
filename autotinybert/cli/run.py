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
                    "speedup target, extract it and its conventional-rule baseline, further-train both, fine-tune, "
                    "report. Each stage writes RUN_DIR/<stage>/ with config.json and DONE.json: a rerun skips "
                    "completed stages, resumes an interrupted one and redoes only what a config change touches.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="pipeline YAML file (see configs/ and docs/pipeline.md)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. search.population=10")
    p.set_defaults(func=_run)

    r = subparsers.add_parser("report", help="rebuild RUN_DIR/report.md and its plots from a pipeline run")
    r.add_argument("run_dir", help="the pipeline's run folder (`out` in its config)")
    r.set_defaults(func=_report)


def _run(args) -> int:
    from ..pipeline.config import PipelineConfig
    from ..pipeline.run import run_pipeline
    from ..pipeline.report import final_table

    config = PipelineConfig.load(args.config, args.overrides)  # every config error before any stage starts
    result = run_pipeline(config)
    print(final_table(result.run_dir))
    print(f"\nreport: {result.report}")
    return 0


def _report(args) -> int:
    from ..pipeline.report import final_table, write_report

    path = write_report(args.run_dir)
    print(final_table(args.run_dir))
    print(f"\nreport: {path}")
    return 0
