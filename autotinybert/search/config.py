"""Typed search configs: `SearchSettings` (how to search; the pipeline's `search` section builds on it) and
`SearchConfig` (the `search` command: the settings + which supernet, predictor, target and output)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from ..config import Config, ConfigError, Field, NameList, PathStr, path_field
from .sampling import DEFAULT_MAX_DRAWS
from .target import DEFAULT_WINDOW

EVALUATORS = ("finetune", "loss")
# Keys that do not change which candidates are proposed or how they score: free to differ on resume.
RUN_ONLY_KEYS = ("out", "resume", "overwrite", "workers", "threads", "progress", "plot")

SearchConfigError = ConfigError  # the error every search-config problem raises (kept as a name for callers)


class SearchSettings(Config):
    """How to search: method, evaluator, latency window, evolution parameters, parallelism."""

    method: Literal["evolved", "random", "fast", "pareto"] = "evolved"
    """evolved (Algorithm 2), random, fast (the paper's §4.4 rule), or pareto: one NSGA-II search (Optuna) over the
    whole space for the front of (score, predicted latency); no target, `generations` x `population` evaluations."""
    backend: Literal["torch", "onnxruntime", "onnxruntime-int8"] | None = None
    """The latency backend the search targets; a predictor measured through another one is refused (null: the
    predictor's own)."""
    evaluator: str | None = "loss"
    """loss (the supernet's held-out MLM loss on loss_max_sequences sequences: the cheap proxy) | finetune |
    module:function (a Python callable arch -> score(s))."""
    window: tuple[float, float] = DEFAULT_WINDOW
    """Admissible predicted latency as factors [low, high] of the target."""
    tasks: NameList = Field(default_factory=list)
    """finetune evaluator: GLUE/SQuAD task names."""
    budget: dict[str, Any] = Field(default_factory=dict)
    """finetune evaluator: downstream Budget keys, e.g. {max_steps: 200, max_train_examples: 2000}."""
    loss_max_sequences: int | None = Field(512, gt=0)
    """loss evaluator: validation sequences used (null: all)."""
    loss_batch_size: int = Field(32, gt=0)
    """loss evaluator: batch size."""
    generations: int = Field(4, gt=0)
    """T: generations of the evolutionary search."""
    population: int = Field(25, gt=0)
    """S: candidates per generation."""
    mutation_prob: float = Field(0.5, ge=0, le=1)
    """pm: mutation probability per dimension."""
    explore_prob: float = Field(0.5, ge=0, le=1)
    """pe: probability of a fresh arch instead of a mutated parent."""
    mutation_steps: int = Field(4, gt=0)
    """Grid steps a mutated dimension (other than layers) may move."""
    max_redraws: int = Field(100, gt=0)
    """Redraws of an inadmissible or duplicate child before a fresh sample."""
    max_draws: int = Field(DEFAULT_MAX_DRAWS, gt=0)
    """Draws per admissible sample before the target is declared infeasible."""
    fast_pool: int = Field(16, gt=0)
    """fast: rule candidates drawn per layer count."""
    top_k: int = Field(3, gt=0)
    """How many winners best.json lists."""
    workers: int = Field(1, gt=0)
    """Evaluation processes (under torchrun: one per rank instead)."""
    threads: int | None = Field(None, gt=0)
    """torch threads per worker process (null: cores / workers)."""

    @field_validator("window")
    @classmethod
    def _ordered(cls, value):
        low, high = value
        if not 0 < low < high:
            raise ValueError(f"window must be two factors 0 < low < high, e.g. [0.85, 1.1]; got {list(value)}")
        return value

    @field_validator("evaluator")
    @classmethod
    def _known(cls, value):
        if value is not None and value not in EVALUATORS and ":" not in value:
            raise ValueError(f"evaluator must be one of {list(EVALUATORS)} or module:function; got {value!r}")
        return value

    @model_validator(mode="after")
    def _finetune_needs_tasks(self):
        if self.evaluator == "finetune" and not self.tasks:
            raise ValueError("the finetune evaluator needs tasks (tasks=[SST-2,MRPC] ...)")
        return self


class SearchConfig(SearchSettings):
    """`autotinybert search`: the best sub-architecture of a supernet under a latency constraint. Writes
    config.json, candidates.jsonl (one line per evaluated arch), best.json (top k) and search.png into `out`."""

    supernet: PathStr | None = path_field(None)
    """Supernet folder (config.json + model.safetensors); its space is the default search space."""
    predictor: str | None = path_field(None, names=True)
    """Latency predictor file, or module:attr giving an object with predict(arch) and reference_ms."""
    speedup: float | None = Field(None, gt=0)
    """Target: X times faster than BERT-base (the predictor's reference)."""
    latency_ms: float | None = Field(None, gt=0)
    """Target latency in milliseconds (instead of speedup)."""
    data: PathStr | None = path_field(None, names=True)
    """finetune evaluator: data folder (glue/<TASK>/, squad/)."""
    tokenizer: PathStr | None = path_field(None, names=True)
    """finetune evaluator: tokenizer folder (default: the supernet folder)."""
    space: str | dict[str, Any] | None = Field(None, json_schema_extra={
        "path": "if_exists", "expand": "autotinybert.space:space_as_dict"})
    """Search a sub-space of the supernet's (preset name, YAML file or mapping)."""
    out: PathStr | None = path_field(None)
    """Output folder (null: nothing written, no resume)."""
    seed: int = Field(0, ge=0)
    """Seed of every draw."""
    resume: bool = False
    """Continue the search in `out`."""
    overwrite: bool = False
    """Start over in a used `out`."""
    progress: bool = True
    """Show a progress bar."""
    plot: bool = True
    """Write search.png."""

    @model_validator(mode="after")
    def _consistent(self):
        if self.method == "pareto":
            if self.speedup is not None or self.latency_ms is not None:
                raise ValueError("method pareto searches the whole space for the score/latency front and takes no "
                                 "target; drop speedup/latency_ms and pick from pareto.jsonl (or use method=evolved)")
        elif (self.speedup is None) == (self.latency_ms is None):
            raise ValueError("give exactly one latency target: speedup=X or latency_ms=T")
        if self.evaluator == "finetune" and not self.data:
            raise ValueError("the finetune evaluator needs the data folder (data=DIR)")
        if self.resume and not self.out:
            raise ValueError("resume needs the output folder of the run to continue (out=DIR)")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite contradict each other; pick one")
        return self

    def result_relevant(self) -> dict[str, Any]:
        """Every key that changes which candidates are proposed or how they score."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY_KEYS}
