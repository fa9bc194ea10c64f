"""The typed values that flow through the pipeline: each stage's inputs (everything it reads -- config sections,
the seed, the outputs of the stages before it) and its outputs (what DONE.json keeps and later stages read).

A stage function sees nothing but its inputs value, and its fingerprint is computed from that value, so a setting
a stage reads cannot be left out of the fingerprint (see `stages.StageInputs`). All values are frozen: a stage
returns new values (e.g. models with their trained folders) instead of changing the ones it was given.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from ..config import Config
from ..data.config import CorpusConfig
from ..downstream.config import FinetuneConfig
from ..latency.config import LatencySettings, PredictorSettings
from ..search.config import SearchSettings
from .config import PipelineFurtherTrain, PipelineLatency, PipelineSupernet
from .stages import StageInputs


ModelKind = Literal["init", "candidate", "searched", "fast", "conventional-scratch", "conventional-inherited"]


class TaskStats(Config):
    """One task's fine-tuning results over the seeds (scores are fractions)."""

    main_metric: str
    seeds: list[int]
    final: list[float]
    """Dev score after the last epoch, per seed."""
    best: list[float]
    """Best dev score seen during fine-tuning (the paper's convention), per seed."""
    final_mean: float
    final_std: float | None
    """Sample standard deviation over the seeds (null with one seed)."""
    best_mean: float
    eval_examples: int
    note: str = ""
    """Data notes, e.g. QQP rows skipped for missing fields."""


class ModelEntry(Config):
    """One model the pipeline builds for a target: a searched candidate (the one chosen after further training is
    the target's searched model), the fast-rule pick, or one of the two conventional baselines."""

    name: str
    """top1-4x ... (candidates), searched-4x, fast-4x, conventional-scratch-4x, conventional-inherited-4x."""
    kind: ModelKind
    speedup_target: float
    arch: str
    extracted_dir: str
    """The initial weights: extracted from the supernet, or (conventional-scratch) freshly initialised."""
    predicted_ms: float
    measured_ms: float | None = None
    measured_speedup: float | None = None
    """BERT-base's measured latency / the model's (one interleaved run)."""
    measured_speedup_init: float | None = None
    """supernet.init_from's measured latency / the model's (same run; null without init_from)."""
    search_rank: int | None = None
    """Candidates and the searched model: rank among the search's winners (1 = best one-shot fitness)."""
    search_fitness: float | None = None
    selection: dict[str, float] = {}
    """The evaluator's scores of the further-trained model (when more than one candidate is further-trained)."""
    selection_fitness: float | None = None
    trained_dir: str | None = None
    inherited_steps: int = 0
    """Supernet steps the model's weights come from (0 for conventional-scratch)."""
    train_steps: int | None = None
    """Optimizer steps of the model's own training (further training, or conventional-scratch's whole run)."""
    scores: dict[str, float] = {}
    """Task -> mean over the seeds of the final-epoch dev main score (fraction)."""
    best_scores: dict[str, float] = {}
    """Task -> mean over the seeds of the best dev main score seen during fine-tuning."""
    tasks: dict[str, TaskStats] = {}
    score: float | None = None
    """Mean of `scores` over the score's tasks: GLUE's (WNLI left out, as in the paper), else every task run."""
    best_score: float | None = None
    seed_scores: list[float] = []
    """`score` of each fine-tuning seed on its own (its spread tells whether a gap is real)."""
    finetuned_dirs: dict[str, str] = {}
    """Task -> the fine-tuned model folder of the first seed."""
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
    init_ms: float | None = None
    """supernet.init_from's arch, timed in the same campaign (null without init_from)."""


class PredictorOutputs(Config):
    predictor: str
    reference_ms: float
    chosen: str
    init_ms: float | None = None
    """The campaign's measured init_from latency, passed on to the targets' conversion."""


class SupernetOutputs(Config):
    supernet: str
    steps: int
    """Optimizer steps the supernet trained (fewer than max_steps when time_budget_s stopped it)."""
    projection: str | None = None
    """kd: the trained student-to-teacher projection (kd_projection.safetensors)."""


class SearchPick(Config):
    """One of a search's winners."""

    arch: str
    predicted_ms: float
    predicted_speedup: float
    fitness: float | None
    scores: dict[str, float]


class SearchOutputs(Config):
    arch: str
    predicted_ms: float
    predicted_speedup: float
    fitness: float | None
    scores: dict[str, float]
    out: str
    generations: list[dict[str, Any]]
    evaluated: int
    top: list[SearchPick] = []
    """The search's top_k winners, best first (`arch` is the first)."""


class TimedArch(Config):
    """A conventional arch timed in the extract stage's interleaved run, for one target's baseline choice."""

    speedup_target: float
    arch: str
    predicted_ms: float
    measured_ms: float


class ExtractOutputs(Config):
    models: list[ModelEntry]
    conventional: list[TimedArch]
    """Per target, the conventional archs nearest each candidate's predicted latency, timed beside them."""
    reference_ms: float
    """BERT-base, timed in the same interleaved run."""
    init: ModelEntry | None = None
    """supernet.init_from itself (kind init), timed in the same run and fine-tuned as the reference row."""

    def init_models(self) -> list[ModelEntry]:
        return [self.init] if self.init is not None else []


class ModelsOutputs(Config):
    """Further-train, baselines and finetune: the models, each stage's with more filled in."""

    models: list[ModelEntry]


class ReportOutputs(Config):
    report: str


# ----------------------------------------------------------------------------------------------------- inputs
class TokenizeInputs(StageInputs):
    data: CorpusConfig  # the `data` section without downstream; cache_dir resolved (null: RUN_DIR/cache)
    progress: bool

    def fingerprint_data(self) -> dict[str, Any]:
        """The settings plus what the files hold: an edited corpus file (or tokenizer folder) re-runs tokenize
        and, through it, every stage that reads it."""
        from ..data.corpus import CorpusError, corpus_digest, list_corpus_files
        from ..data.tokenizer import tokenizer_folder_digest

        data = super().fingerprint_data()
        try:
            data["corpus_sha256"] = corpus_digest(list_corpus_files(self.data.corpus))
        except CorpusError:
            data["corpus_sha256"] = None  # missing or not text: the stage itself reports it
        data["tokenizer_sha256"] = tokenizer_folder_digest(self.data.tokenizer)
        return data


class LatencyInputs(StageInputs):
    latency: PipelineLatency
    space: dict[str, Any]  # supernet.search_space(), resolved
    seed: int
    init_arch: str | None = None
    """supernet.init_from's arch: timed in the campaign beside BERT-base."""


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
    top_k: int  # further_train.top_k: the candidates extracted per target
    baseline_head_size: int  # latency.baseline_head_size: heads = hidden / this for the conventional archs
    conventional_candidates: int  # baselines.latency_candidates: conventional archs timed per candidate
    seed: int
    init_arch: str | None = None  # supernet.init_from's arch: timed beside the models
    init_dir: str | None = None  # its BERT folder: fine-tuned as the reference row
    supernet: SupernetOutputs
    predictor: PredictorOutputs
    campaign: LatencyOutputs


class SelectionSettings(Config):
    """How the further-trained candidates of a target are compared (the search's evaluator)."""

    evaluator: str  # loss: the further-trained model's validation loss; finetune: the search's budgeted fine-tune
    tasks: list[str] = []  # finetune only
    budget: dict[str, Any] = {}  # finetune only
    downstream: str | None = None  # finetune only: data.downstream


class FurtherTrainInputs(StageInputs):
    further_train: PipelineFurtherTrain
    selection: SelectionSettings | None  # None with one candidate per target (nothing to choose)
    data: CorpusConfig
    seed: int
    progress: bool
    tokenized: TokenizeOutputs
    supernet: SupernetOutputs
    extract: ExtractOutputs


class BaselinesInputs(StageInputs):
    further_train: PipelineFurtherTrain  # conventional-inherited: the searched model's further training
    warmup_ratio: float  # baselines.warmup_ratio: conventional-scratch's warm-up
    data: CorpusConfig
    seed: int
    progress: bool
    tokenized: TokenizeOutputs
    supernet: SupernetOutputs
    extract: ExtractOutputs
    trained: ModelsOutputs


class FinetuneInputs(StageInputs):
    tasks: list[str]
    config: FinetuneConfig  # finetune.config, its seed resolved (null: the pipeline's seed)
    seeds: int  # fine-tuning runs per (model, task): seeds config.seed, config.seed + 1, ...
    task_configs: dict[str, dict[str, Any]]  # those of `tasks` only
    downstream: str
    progress: bool
    models: list[ModelEntry]
    workers: int = 1  # fine-tunes at once: changes how fast, not what, so not in the fingerprint

    run_only: ClassVar[frozenset[str]] = frozenset({"progress", "workers"})


class ReportInputs(StageInputs):
    version: Literal[3] = 3  # bump when the report's content changes, so finished runs rebuild it
