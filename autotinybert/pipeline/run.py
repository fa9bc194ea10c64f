"""`run_pipeline(config)`: tokenize -> latency -> predictor -> supernet -> search (one per target) -> extract ->
further-train -> finetune -> report, each stage in ``RUN_DIR/<stage>/`` under `StageRunner` (skip / resume /
invalidate downstream). The conventional-rule baseline of each target is extracted, trained and evaluated the
same way as the searched model, so the report compares them at equal latency.

The stages are listed in `plan`, their functions are in `steps` and the values they exchange in `stage_types`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..io import atomic_write_json
from .config import PipelineConfig
from .plan import plan
from .ranks import Ranks
from .stage_types import ModelEntry
from ..quiet import quiet_libraries
from .preflight import preflight
from .stages import RunFolderBusyError, RunLock, StageRunner, relative_paths
from .steps import STAGE_LOG

__all__ = ["run_pipeline", "PipelineResult", "ModelEntry", "RESOLVED_CONFIG"]

RESOLVED_CONFIG = "pipeline.json"


@dataclass
class PipelineResult:
    run_dir: Path
    models: list[ModelEntry]
    reference_ms: float
    report: Path
    stages: dict[str, dict[str, Any]]  # stage -> {"skipped", "resumed", "wall_s"}
    wall_s: float


def run_pipeline(config: PipelineConfig | dict | str | Path, overrides: list[str] | tuple[str, ...] = (),
                 log: Callable[[str], None] = print) -> PipelineResult:
    """Run (or continue) the whole pipeline; returns the models with their latencies and scores."""
    cfg = config if isinstance(config, PipelineConfig) and not overrides else PipelineConfig.load(config, overrides)
    if not cfg.progress:
        quiet_libraries()
    preflight(cfg)  # cheap checks (writable out, text corpus, teacher vocabulary) before the lock and any stage
    ranks = Ranks.from_environment()
    lock = RunLock(cfg.out)
    try:
        busy = None
        if ranks.is_main:  # rank 0 owns the run folder
            try:
                lock.acquire()
            except RunFolderBusyError as err:
                busy = str(err)
        busy = ranks.share(busy)
        if busy:
            raise RunFolderBusyError(busy)
        return _run(cfg, ranks, log)
    finally:
        lock.release()
        ranks.close()


def _run(cfg: PipelineConfig, ranks: Ranks, log: Callable[[str], None]) -> PipelineResult:
    started = time.time()
    run_dir = Path(cfg.out)
    runner = StageRunner(run_dir, log=log, ranks=ranks)
    if ranks.is_main:
        atomic_write_json(run_dir / RESOLVED_CONFIG, cfg.to_dict())
    outputs: dict[str, Any] = {}
    token = STAGE_LOG.set(runner.log)  # silent on ranks other than 0
    try:
        for stage in plan(cfg):
            inputs = stage.inputs(cfg, {name: outputs[name] for name in stage.upstream})
            outputs[stage.name] = runner.run(stage.name, inputs, stage.fn, stage.outputs, upstream=stage.upstream,
                                             distributed=stage.distributed).outputs
            if stage.check is not None:
                stage.check(cfg, outputs[stage.name])
    finally:
        STAGE_LOG.reset(token)
    stages = {name: {"skipped": r.skipped, "resumed": r.resumed, "wall_s": round(r.wall_s, 2)}
              for name, r in runner.results.items()}
    models = outputs["finetune"].models
    reference_ms = outputs["latency"].reference_ms
    result = PipelineResult(run_dir, models, reference_ms, Path(outputs["report"].report), stages,
                            time.time() - started)
    if ranks.is_main:
        models_data, relative = relative_paths([m.to_dict() for m in models], runner.run_dir)
        atomic_write_json(run_dir / "result.json", {  # paths relative to the run folder (it may move)
            "models": models_data, "relative": [f"/models{p}" for p in relative], "reference_ms": reference_ms,
            "stages": stages, "wall_s": round(result.wall_s, 2)})
    return result
