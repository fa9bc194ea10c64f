"""The typed values that flow through the pipeline: each stage's inputs (everything it reads -- config sections,
the seed, the outputs of the stages before it) and its outputs (what DONE.json keeps and later stages read).

A stage function sees nothing but its inputs value, and its fingerprint is computed from that value, so a setting
a stage reads cannot be left out of the fingerprint (see `stages.StageInputs`). All values are frozen: a stage
returns new values (e.g. models with their trained folders) instead of changing the ones it was given.
"""

from __future__ import annotations

from typing import Any, Literal

from ..config import Config
from ..data.config import CorpusConfig
from ..downstream.config import FinetuneConfig
from ..latency.config import LatencySettings, PredictorSettings
from ..search.config import SearchSettings
from .config import PipelineFurtherTrain, PipelineLatency, PipelineSupernet
from .stages import StageInputs


class ModelEntry(Config):
    """One model the pipeline builds for a target: the searched winner, the fast-rule pick or the baseline."""

    name: str
    """searched-4x / fast-4x / conventional-4x."""
    kind: Literal["searched", "fast", "conventional"]
    speedup_target: float
    arch: str
    extracted_dir: str
    predicted_ms: float
    measured_ms: float | None = None
    measured_speedup: float | None = None
    trained_dir: str | None = None
    scores: dict[str, float] = {}
    """Task -> best dev main score (fraction)."""
    score: float | None = None
    """GLUE mean (or the mean over the tasks run)."""
    finetuned_dirs: dict[str, str] = {}
    same_as: str | None = None
    """Another entry with the same arch and the same initial weights: its results are reused."""


# ---------------------------------------------------------------------------------------------------- outputs
class TokenizeOutputs(Config):
    tokenizer_dir: str
    corpus_cache: str
    train_sequences: int
    validation_sequences: int


class LatencyOutputs(Config):
    records: str
    """latency.jsonl: one LatencyRecord per line plus its role (sampled | conventional | reference)."""
    reference_ms: float
    """BERT-base: the median over the chunks' reference runs."""


class PredictorOutputs(Config):
    predictor: str
    reference_ms: float
    chosen: str


class SupernetOutputs(Config):
    supernet: str


class SearchOutputs(Config):
    arch: str
    predicted_ms: float
    predicted_speedup: float
    fitness: float | None
    scores: dict[str, float]
    out: str
    generations: list[dict[str, Any]]
    evaluated: int


class ModelsOutputs(Config):
    """Extract, further-train and finetune: the models, each stage's with more filled in."""

    models: list[ModelEntry]


class ReportOutputs(Config):
    report: str


# ----------------------------------------------------------------------------------------------------- inputs
class TokenizeInputs(StageInputs):
    data: CorpusConfig  # the `data` section without downstream; cache_dir resolved (null: RUN_DIR/cache)
    progress: bool


class LatencyInputs(StageInputs):
    latency: PipelineLatency
    space: str | dict[str, Any]  # supernet.space
    seed: int


class PredictorInputs(StageInputs):
    predictor: PredictorSettings
    seed: int
    latency: LatencyOutputs


class SupernetInputs(StageInputs):
    supernet: PipelineSupernet
    data: CorpusConfig
    seed: int
    progress: bool
    tokenized: TokenizeOutputs


class SearchInputs(StageInputs):
    search: SearchSettings  # `search` without the per-pipeline keys; method "fast" for the fast-rule stages
    speedup: float
    plot: bool
    downstream: str | None  # data.downstream, for the finetune evaluator only (None: not read)
    seed: int
    progress: bool
    supernet: SupernetOutputs
    predictor: PredictorOutputs


class TargetSearches(Config):
    """The searches of one speedup target."""

    speedup: float
    searched: SearchOutputs
    fast: SearchOutputs | None = None


class ExtractInputs(StageInputs):
    targets: list[TargetSearches]
    latency: LatencySettings  # how the chosen archs are timed with BERT-base
    seed: int
    supernet: SupernetOutputs
    predictor: PredictorOutputs
    campaign: LatencyOutputs


class FurtherTrainInputs(StageInputs):
    further_train: PipelineFurtherTrain
    data: CorpusConfig
    seed: int
    progress: bool
    tokenized: TokenizeOutputs
    models: list[ModelEntry]


class FinetuneInputs(StageInputs):
    tasks: list[str]
    config: FinetuneConfig  # finetune.config, its seed resolved (null: the pipeline's seed)
    task_configs: dict[str, dict[str, Any]]  # those of `tasks` only
    downstream: str
    progress: bool
    models: list[ModelEntry]


class ReportInputs(StageInputs):
    version: Literal[2] = 2  # bump when the report's content changes, so finished runs rebuild it
