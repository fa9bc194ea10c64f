"""``search.method: pareto`` in the pipeline: one stage searches the whole space for the score/latency front
(`autotinybert.search.pareto`), then each speedup target's stage (``search-<X>x``, the name the per-target searches
have) picks its archs from that front instead of searching again. Downstream stages read the same `SearchOutputs`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import UserError
from ..search.config import SearchSettings
from .stage_types import PredictorOutputs, SearchOutputs, SearchPick, SupernetOutputs
from .stages import StageInputs

STAGE = "pareto"


class ParetoInputs(StageInputs):
    search: SearchSettings  # `search` without the per-pipeline keys; method "pareto"
    plot: bool
    downstream: str | None  # data.downstream, for the finetune evaluator only
    seed: int
    progress: bool
    supernet: SupernetOutputs
    predictor: PredictorOutputs


class ParetoOutputs(Config):
    out: str
    front: list[SearchPick]
    """The non-dominated candidates, fastest first."""
    evaluated: int
    generations: list[dict[str, Any]]
    hypervolume: float


class PickInputs(StageInputs):
    speedup: float
    window: tuple[float, float]
    top_k: int
    front: ParetoOutputs
    predictor: PredictorOutputs


def pareto_inputs(cfg, up) -> ParetoInputs:
    settings = cfg.search.to_dict()
    for key in ("speedups", "speedup_over", "fast", "plot"):
        settings.pop(key, None)
    return ParetoInputs(search=SearchSettings.from_dict(settings), plot=cfg.search.plot, seed=cfg.seed,
                        progress=cfg.progress,
                        downstream=cfg.data.downstream if cfg.search.evaluator == "finetune" else None,
                        supernet=up["supernet"], predictor=up["predictor"])


def pick_inputs(cfg, up, *, speedup: float) -> PickInputs:
    from .plan import bert_base_speedup

    return PickInputs(speedup=bert_base_speedup(cfg, speedup, up["predictor"]), window=tuple(cfg.search.window), top_k=cfg.search.top_k, front=up[STAGE],
                      predictor=up["predictor"])


def pareto_search(inputs: ParetoInputs, stage_dir: Path, resume: bool) -> ParetoOutputs:
    """The one search over the whole space."""
    import json

    from ..search import run_search
    from ..search.config import SearchConfig

    out = stage_dir / "search"
    result = run_search(SearchConfig.from_dict({
        **inputs.search.to_dict(), "plot": inputs.plot, "data": inputs.downstream,
        "supernet": inputs.supernet.supernet, "predictor": inputs.predictor.predictor, "seed": inputs.seed,
        "progress": inputs.progress, "out": str(out), "resume": resume, "overwrite": not resume}))
    best = json.loads((out / "best.json").read_text())
    front = [SearchPick(arch=r.arch, predicted_ms=r.latency_ms, predicted_speedup=r.speedup, fitness=r.fitness,
                        scores=r.scores) for r in result.front]
    return ParetoOutputs(out=str(out), front=front, evaluated=len(result.candidates), generations=result.generations,
                         hypervolume=float(best["hypervolume"]))


def pick(inputs: PickInputs, stage_dir: Path, resume: bool) -> SearchOutputs:
    """One target's archs from the front: the best-scoring ones whose predicted latency is at most the window's
    high factor times the target latency (reference / speedup), best first, at most top_k."""
    from ..io import atomic_write_json

    reference_ms = inputs.predictor.reference_ms
    budget = inputs.window[1] * reference_ms / inputs.speedup
    fits = sorted((p for p in inputs.front.front if p.predicted_ms <= budget),
                  key=lambda p: (-(p.fitness if p.fitness is not None else float("-inf")), p.predicted_ms))
    if not fits:
        fastest = min(inputs.front.front, key=lambda p: p.predicted_ms, default=None)
        raise UserError(f"no arch on the Pareto front fits speedup {inputs.speedup:g}x (budget {budget:.3f} ms); "
                        + (f"its fastest is {fastest.arch} at {fastest.predicted_ms:.3f} ms: " if fastest else "")
                        + "lower the target or search longer (search.generations)")
    top = fits[:inputs.top_k]
    best = top[0]
    atomic_write_json(stage_dir / "pick.json", {"speedup": inputs.speedup, "budget_ms": budget,
                                                "picked": [p.to_dict() for p in top], "front": inputs.front.out})
    return SearchOutputs(arch=best.arch, predicted_ms=best.predicted_ms, predicted_speedup=best.predicted_speedup,
                         fitness=best.fitness, scores=best.scores, out=inputs.front.out, generations=[],
                         evaluated=0, top=top)


def pareto_stages(cfg, stage_type) -> list:
    """The pareto stage and one pick stage per target (named like the per-target searches)."""
    from .steps import target_tag

    stages = [stage_type(STAGE, pareto_search, pareto_inputs, ParetoOutputs, ("supernet", "predictor"),
                         distributed=True)]
    for speedup in cfg.search.speedups:
        stages.append(stage_type(f"search-{target_tag(speedup)}", pick, partial(pick_inputs, speedup=speedup),
                                 SearchOutputs, (STAGE, "predictor")))
    return stages
