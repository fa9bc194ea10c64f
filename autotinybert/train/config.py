"""Typed configs of the two training commands and of the pipeline's `supernet` / `further_train` sections.

    TrainSettings        how to train (objective, optimiser, schedule, checkpoints): a pipeline section
    ├─ SupernetSettings  + the search space and sandwich sampling             (pipeline: `supernet`)
    └─ FurtherTrainSettings  no warm-up, M = 1 (paper §3.6)                   (pipeline: `further_train`)
    TrainSupernetConfig / TrainModelConfig: the settings + the corpus + where to write: the commands

Defaults are CPU scale (what learns on a laptop core in minutes). The paper's settings (Algorithm 1 on 16 GPUs):
``batch_size=256, learning_rate=1e-5, warmup_ratio=0.1, epochs=5, archs_per_step=3`` on Wikipedia + BooksCorpus.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from ..config import Config, ConfigError, Field, PathStr, path_field
from ..data.config import CorpusConfig

# Keys that do not change what is computed step by step: a checkpoint resumes across changes of these.
RUN_ONLY_KEYS = frozenset({"out", "resume", "overwrite", "stop_after", "time_budget_s", "progress",
                           "checkpoint_every", "keep_checkpoints", "eval_every", "eval_sequences", "threads",
                           "tensorboard", "cache_dir", "log_every"})

TrainConfigError = ConfigError  # the error every training-config problem raises (kept as a name for callers)


class TrainSettings(Config):
    """How to train: objective, optimiser, schedule, devices, checkpoints."""

    objective: Literal["mlm", "kd"] = "mlm"
    """mlm (masked LM) or kd (distillation from `teacher`)."""
    teacher: PathStr | None = path_field(None, names=True)
    """kd: the teacher, a BERT-like model folder or hub name loadable with AutoModel."""
    kd_attention_weight: float = Field(1.0, ge=0)
    """kd: weight of the last-layer attention term."""
    kd_hidden_weight: float = Field(1.0, ge=0)
    """kd: weight of the last-layer hidden-state term."""
    kd_attention: Literal["scores", "probs", "kl"] = "scores"
    """kd: the attention term. scores: MSE of the raw last-layer attention scores before the softmax (TinyBERT,
    the paper and its official code); probs: MSE of the attention probabilities; kl: KL(teacher || student) of the
    attention distributions (MiniLM). Padding contributes to none of them."""
    stream: str | None = None
    """Name of the run's random streams (data order, MLM masks, dropout): runs of one seed with different streams
    draw different batches. null: the untagged streams (what a supernet run draws)."""
    batch_size: int = Field(32, gt=0)
    """Global sequences per optimizer step."""
    workers: int | None = Field(None, gt=0)
    """Algorithm-1 workers N (sub-batches per step); null: the number of processes."""
    archs_per_step: int = Field(3, gt=0)
    """M: sub-models each worker trains per step."""
    grad_accum: int = Field(1, gt=0)
    """Micro-batches per worker sub-batch (memory only; the same maths)."""
    learning_rate: float = Field(5e-4, gt=0)
    """Peak AdamW learning rate."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay (not on biases and LayerNorm)."""
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    """Share of the steps with a linear warm-up, then linear decay to 0."""
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    """AdamW beta1."""
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    """AdamW beta2."""
    adam_epsilon: float = Field(1e-6, gt=0)
    """AdamW epsilon."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping norm."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the corpus (ignored when max_steps is set)."""
    max_steps: int | None = Field(None, gt=0)
    """Optimizer steps; overrides epochs."""
    hidden_dropout_prob: float = Field(0.1, ge=0, lt=1)
    """Dropout on hidden states."""
    attention_probs_dropout_prob: float = Field(0.1, ge=0, lt=1)
    """Dropout on attention probabilities."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    threads: int | None = Field(None, gt=0)
    """torch intra-op threads per process; null leaves torch's setting."""
    checkpoint_every: int = Field(500, gt=0)
    """Steps between checkpoints."""
    keep_checkpoints: int = Field(2, gt=0)
    """Checkpoints kept on disk."""
    eval_every: int = Field(200, gt=0)
    """Steps between validation losses."""
    eval_sequences: int = Field(256, gt=0)
    """Validation sequences per evaluation."""
    log_every: int = Field(1, gt=0)
    """Steps between metrics lines."""
    stop_after: int | None = Field(None, gt=0)
    """Stop (with a checkpoint) after this step, as if killed; resume continues."""
    time_budget_s: float | None = Field(None, gt=0)
    """Stop (with a checkpoint) once this much wall time has passed."""
    tensorboard: bool = False
    """Also write TensorBoard event files (needs the tensorboard package)."""

    @model_validator(mode="after")
    def _needs_teacher(self):
        if self.objective == "kd" and not self.teacher:
            raise ValueError("objective 'kd' needs a teacher: set teacher to a BERT-like model folder or name, "
                             "e.g. the all-MiniLM-L6-v2 folder")
        return self


class SupernetSettings(TrainSettings):
    """One-shot training of a SuperBERT over `space` (Algorithm 1)."""

    space: str | dict[str, Any] = Field("cpu-mlm", json_schema_extra={"path": "if_exists",
                                                                       "expand": "autotinybert.space:space_as_dict"})
    """Search space: a preset (mlm, kd, cpu-mlm, cpu-kd), a YAML file or a mapping; with init_from also from-init
    (max arch = the checkpoint's; the cut: dims for kd, else by head size), from-init-heads, from-init-dims."""
    sandwich: bool = False
    """BigNAS sandwich: among each worker's M archs, always the max and the min arch (M >= 3: the rest random)."""
    init_from: PathStr | None = path_field(None, names=True)
    """Start from a pre-trained BERT: a folder or hub name (BertModel, BertForMaskedLM, BertForPreTraining, a
    sentence-transformers BERT, an AutoTinyBert folder). Keys left unset then default to space=from-init,
    objective=kd with teacher=the checkpoint, tokenizer=its own, and the measured importance and depth_rule."""
    importance: Literal["taylor", "activation", "none"] = "none"
    """init_from: how units are ranked before training so that every sub-model keeps the most important heads /
    head dims / FFN neurons / hidden channels (taylor: |w dL/dw|; activation: Minitron; none: as stored).
    Default with init_from: activation (measured, docs/training.md)."""
    calibration_batches: int = Field(16, gt=0)
    """init_from: training batches (of batch_size sequences) the importance scores and layer ranking read."""
    depth_rule: Literal["first", "spread", "importance"] = "first"
    """Layers a sub-model of L layers runs: first (the paper), spread (evenly spread, ending with the last layer),
    importance (init_from: ranked by greedy removal on the calibration batches; the default with init_from)."""

    @model_validator(mode="before")
    @classmethod
    def _init_from_defaults(cls, data):
        if isinstance(data, dict) and data.get("init_from"):
            from .init_from import init_from_defaults

            data = init_from_defaults(data)
        return data

    @field_validator("space")
    @classmethod
    def _space_loads(cls, value):
        from ..space import SearchSpace, is_from_init

        if not is_from_init(value):  # from-init is checked with init_from, below
            SearchSpace.load(value)  # a bad preset / file / grid fails here, before any work
        return value

    @model_validator(mode="after")
    def _sandwich_needs_three(self):
        # with 2, every step trains only the max and the min arch: no arch in between is ever sampled, and the
        # search then ranks sub-models the supernet never trained (a full run ranked 12 archs backward this way)
        if self.sandwich and self.archs_per_step < 3:
            raise ValueError(f"sandwich=true with archs_per_step={self.archs_per_step} trains only the max and the "
                             "min arch: no arch in between is ever sampled. Set archs_per_step >= 3 (BigNAS: 4, the "
                             "max, the min and two random archs) or sandwich=false")
        return self

    @model_validator(mode="after")
    def _init_from_keys(self):
        # from-init, importance and depth_rule=importance need init_from. The checkpoint itself is checked before
        # any work by the trainer (`init_from.preflight`), not here: a config is built without reading its paths.
        from .init_from import check_settings

        check_settings(self)
        return self

    def search_space(self):
        """The resolved `SearchSpace` (from-init reads init_from's config)."""
        from ..space import resolve_space

        return resolve_space(self.space, self.init_from, self.objective)


class FurtherTrainSettings(TrainSettings):
    """Further training of one extracted model (paper §3.6): no warm-up, one arch per step."""

    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    """Share of the steps with a linear warm-up (the paper continues without one)."""
    archs_per_step: int = Field(1, gt=0)
    """Forward/backward passes per worker and step (1: plain training)."""


class RunSettings(Config):
    """Where a command writes, its seed, and what to do with an existing output folder."""

    out: PathStr = path_field("")
    """Output folder (a loadable model folder when done)."""
    seed: int = Field(0, ge=0)
    """Seed of every random draw (init, data order, masks, archs, dropout)."""
    resume: bool = False
    """Continue the run in `out` from its last checkpoint."""
    overwrite: bool = False
    """Replace a non-empty `out`."""
    progress: bool = True
    """Show progress bars."""

    @model_validator(mode="after")
    def _resume_or_overwrite(self):
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite contradict each other: pick one")
        return self


class TrainConfig(TrainSettings, CorpusConfig, RunSettings):
    """Settings shared by `train-supernet` and `train-model`."""

    def compute_settings(self) -> dict[str, Any]:
        """Every setting that changes the computation (checkpoints record it; a resume must match it)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY_KEYS}

    def fingerprint(self, exclude: frozenset[str] | set[str] = RUN_ONLY_KEYS) -> str:
        return super().fingerprint(exclude)


class TrainSupernetConfig(SupernetSettings, TrainConfig):
    """`autotinybert train-supernet`: one-shot training of a SuperBERT over a search space (Algorithm 1)."""


class TrainModelConfig(FurtherTrainSettings, TrainConfig):
    """`autotinybert train-model`: further training of one extracted model (no warm-up, M = 1)."""

    model: PathStr = path_field("")
    """The model folder to train further (written by `autotinybert extract`)."""
    kd_projection: PathStr | None = path_field(None)
    """kd: start the student-to-teacher projection from this kd_projection.safetensors (the supernet's; a model of
    width d takes its first d columns); null: a fresh projection."""

    @model_validator(mode="after")
    def _needs_model(self):
        if not self.model:
            raise ValueError("train-model needs model=DIR, an extracted model folder")
        return self
