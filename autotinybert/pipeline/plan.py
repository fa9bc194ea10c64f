"""The pipeline's stages in order, and the pure functions that build each stage's inputs from the config and the
outputs of the stages it reads (only those: a builder sees no other stage's outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from ..config import Config
from ..data.config import CorpusConfig
from ..downstream.config import FinetuneConfig
from ..errors import UserError
from ..latency.config import LatencySettings
from ..search.config import SearchSettings
from . import steps
from .config import PipelineConfig
from .stage_types import (BaselinesInputs, ExtractInputs, ExtractOutputs, FinetuneInputs, FurtherTrainInputs,
                          LatencyInputs, LatencyOutputs, ModelsOutputs, PredictorInputs, PredictorOutputs,
                          ReportInputs, ReportOutputs, SearchInputs, SearchOutputs, SelectionSettings,
                          SupernetInputs, SupernetOutputs, TargetSearches, TokenizeInputs, TokenizeOutputs)
from .stages import StageInputs
from .steps import target_tag

Upstream = dict[str, Config]  # stage name -> its outputs


@dataclass(frozen=True)
class Stage:
    """One stage of the plan: `fn(inputs(cfg, upstream outputs), stage_dir, resume) -> outputs`."""

    name: str
    fn: Callable[[Any, Path, bool], Config]
    inputs: Callable[[PipelineConfig, Upstream], StageInputs]
    outputs: type[Config]
    upstream: tuple[str, ...] = ()
    distributed: bool = False  # under torchrun every rank runs it (data-parallel training, one search candidate per rank)
    check: Callable[[PipelineConfig, Config], None] | None = None  # run on its outputs before the next stage


# ------------------------------------------------------------------------------------------------ builders
def corpus(cfg: PipelineConfig) -> CorpusConfig:
    """The `data` section as every training run reads it; its cache defaults to RUN_DIR/cache."""
    data = cfg.data.to_dict()
    del data["downstream"]
    # absolute, so that the stages' fingerprints see it relative to the run folder (a moved run keeps them)
    return CorpusConfig.from_dict({**data, "cache_dir": cfg.data.cache_dir or str(Path(cfg.out).absolute() / "cache")})


def tokenize_inputs(cfg: PipelineConfig, up: Upstream) -> TokenizeInputs:
    return TokenizeInputs(data=corpus(cfg), progress=cfg.progress)


def init_arch(cfg: PipelineConfig) -> str | None:
    """The supernet.init_from checkpoint's arch (timed beside BERT-base in every campaign), or None."""
    if not cfg.supernet.init_from:
        return None
    from ..pretrained import inspect_checkpoint

    return str(inspect_checkpoint(str(cfg.supernet.init_from)).arch)


def latency_inputs(cfg: PipelineConfig, up: Upstream) -> LatencyInputs:
    # the resolved space (a from-init space is the checkpoint's, read here once)
    return LatencyInputs(latency=cfg.latency, space=cfg.supernet.search_space().to_dict(), seed=cfg.seed,
                         init_arch=init_arch(cfg))


def bert_base_speedup(cfg: PipelineConfig, target: float, fitted: PredictorOutputs) -> float:
    """A target of search.speedups as a speedup over BERT-base (what the search aims at): with
    speedup_over=init, `target` times faster than the checkpoint's latency measured in the same campaign."""
    if cfg.search.speedup_over == "bert-base":
        return target
    return target * fitted.reference_ms / fitted.init_ms


def predictor_inputs(cfg: PipelineConfig, up: Upstream) -> PredictorInputs:
    return PredictorInputs(predictor=cfg.predictor, seed=cfg.seed, latency=up["latency"])


def supernet_inputs(cfg: PipelineConfig, up: Upstream) -> SupernetInputs:
    return SupernetInputs(supernet=cfg.supernet, data=corpus(cfg), seed=cfg.seed, progress=cfg.progress,
                          tokenized=up["tokenize"])


def search_inputs(cfg: PipelineConfig, up: Upstream, *, speedup: float, method: str) -> SearchInputs:
    settings = cfg.search.to_dict()
    for key in ("speedups", "speedup_over", "fast", "plot"):
        del settings[key]
    return SearchInputs(search=SearchSettings.from_dict({**settings, "method": method}),
                        speedup=bert_base_speedup(cfg, speedup, up["predictor"]),
                        plot=cfg.search.plot, seed=cfg.seed, progress=cfg.progress,
                        downstream=cfg.data.downstream if cfg.search.evaluator == "finetune" else None,
                        supernet=up["supernet"], predictor=up["predictor"])


def extract_inputs(cfg: PipelineConfig, up: Upstream) -> ExtractInputs:
    targets = [TargetSearches(speedup=s, searched=up[f"search-{target_tag(s)}"],
                              fast=up[f"fast-{target_tag(s)}"] if cfg.search.fast else None)
               for s in cfg.search.speedups]
    return ExtractInputs(targets=targets, latency=LatencySettings(**cfg.latency.timing_kwargs()),
                         init_arch=init_arch(cfg), init_dir=_init_dir(cfg),
                         top_k=cfg.further_train.top_k, baseline_head_size=cfg.latency.baseline_head_size,
                         conventional_candidates=cfg.baselines.latency_candidates, seed=cfg.seed,
                         supernet=up["supernet"], predictor=up["predictor"], campaign=up["latency"])


def _init_dir(cfg: PipelineConfig) -> str | None:
    """The checkpoint's BERT folder (fine-tuned as the reference row), or None."""
    if not cfg.supernet.init_from:
        return None
    from ..train.init_from import checkpoint_model_dir

    return checkpoint_model_dir(str(cfg.supernet.init_from))


def selection_settings(cfg: PipelineConfig) -> SelectionSettings | None:
    """How a target's further-trained candidates are compared: the search's evaluator (None with one candidate)."""
    if cfg.further_train.top_k == 1:
        return None
    s = cfg.search
    if s.evaluator == "finetune":
        return SelectionSettings(evaluator="finetune", tasks=list(s.tasks), budget=dict(s.budget),
                                 downstream=cfg.data.downstream)
    return SelectionSettings(evaluator=s.evaluator)


def further_train_inputs(cfg: PipelineConfig, up: Upstream) -> FurtherTrainInputs:
    return FurtherTrainInputs(further_train=cfg.further_train, selection=selection_settings(cfg), data=corpus(cfg),
                              seed=cfg.seed, progress=cfg.progress, tokenized=up["tokenize"],
                              supernet=up["supernet"], extract=up["extract"])


def baselines_inputs(cfg: PipelineConfig, up: Upstream) -> BaselinesInputs:
    return BaselinesInputs(further_train=cfg.further_train, warmup_ratio=cfg.baselines.warmup_ratio,
                           data=corpus(cfg), seed=cfg.seed, progress=cfg.progress, tokenized=up["tokenize"],
                           supernet=up["supernet"], extract=up["extract"], trained=up["further-train"])


def finetune_inputs(cfg: PipelineConfig, up: Upstream) -> FinetuneInputs:
    from ..downstream.tasks import parse_tasks

    fine = cfg.finetune
    chosen = {spec.name for spec in parse_tasks(fine.tasks)}
    seed = fine.config.seed if fine.config.seed is not None else cfg.seed
    return FinetuneInputs(tasks=fine.tasks, config=FinetuneConfig.from_dict({**fine.config.to_dict(), "seed": seed}),
                          seeds=fine.seeds,
                          task_configs={k: v for k, v in fine.task_configs.items() if k.lower() in chosen},
                          downstream=cfg.data.downstream, progress=cfg.progress, workers=fine.workers,
                          models=up["extract"].init_models() + up["further-train"].models + up["baselines"].models)


def report_inputs(cfg: PipelineConfig, up: Upstream) -> ReportInputs:
    return ReportInputs()


def check_targets(cfg: PipelineConfig, fitted: PredictorOutputs) -> None:
    """Refuse targets whose admissible window misses every arch of the space (by the predictor), before the
    supernet trains and any search starts."""
    from ..latency import LatencyPredictor

    p = LatencyPredictor.load(fitted.predictor)
    space = cfg.supernet.search_space()
    low, high = cfg.search.window
    min_ms, max_ms = p.predict(space.min_arch), p.predict(space.max_arch)
    target_ms = {s: p.reference_ms / bert_base_speedup(cfg, s, fitted) for s in cfg.search.speedups}
    bad = [s for s, ms in target_ms.items() if not (low * ms <= max_ms and high * ms >= min_ms)]
    if bad:
        over = fitted.reference_ms if cfg.search.speedup_over == "bert-base" else fitted.init_ms
        raise UserError(f"search.speedups {bad} are outside what the space reaches on this machine (predicted "
                        f"{over / max_ms:.1f}x faster than {cfg.search.speedup_over} for its largest arch to "
                        f"{over / min_ms:.1f}x for its smallest, window {list(cfg.search.window)}); pick targets "
                        "inside that range")


# ---------------------------------------------------------------------------------------------------- plan
def plan(cfg: PipelineConfig) -> list[Stage]:
    """tokenize -> latency -> predictor (targets checked) -> supernet -> per target: search (and fast) -> extract
    (top k, fast pick, conventional archs timed beside them) -> further-train (and the choice among the top k) ->
    baselines (conventional-scratch, conventional-inherited) -> finetune -> report. The supernet comes after
    latency and predictor, so an unreachable target fails before hours of training."""
    searches = []
    kinds = [("search", cfg.search.method)] + ([("fast", "fast")] if cfg.search.fast else [])
    if cfg.search.method == "pareto":  # one search for the whole front; each target's stage picks from it
        from .pareto import pareto_stages

        searches, kinds = pareto_stages(cfg, Stage), kinds[1:]
    for speedup in cfg.search.speedups:
        for prefix, method in kinds:
            searches.append(Stage(f"{prefix}-{target_tag(speedup)}", steps.search,
                                  partial(search_inputs, speedup=speedup, method=method), SearchOutputs,
                                  ("supernet", "predictor"), distributed=True))
    names = tuple(s.name for s in searches)
    return [
        Stage("tokenize", steps.tokenize, tokenize_inputs, TokenizeOutputs),
        Stage("latency", steps.latency, latency_inputs, LatencyOutputs),
        Stage("predictor", steps.predictor, predictor_inputs, PredictorOutputs, ("latency",), check=check_targets),
        Stage("supernet", steps.supernet, supernet_inputs, SupernetOutputs, ("tokenize",), distributed=True),
        *searches,
        Stage("extract", steps.extract, extract_inputs, ExtractOutputs, ("supernet", "latency", "predictor", *names)),
        Stage("further-train", steps.further_train, further_train_inputs, ModelsOutputs,
              ("tokenize", "supernet", "extract"), distributed=True),
        Stage("baselines", steps.baselines, baselines_inputs, ModelsOutputs,
              ("tokenize", "supernet", "extract", "further-train"), distributed=True),
        Stage("finetune", steps.finetune, finetune_inputs, ModelsOutputs, ("extract", "further-train", "baselines")),
        Stage("report", steps.report, report_inputs, ReportOutputs, ("predictor", *names, "extract", "finetune")),
    ]
