"""Typed configs of the two training commands, buildable from a dict or YAML (unknown keys are refused).

Defaults are CPU scale (what learns on a laptop core in minutes). The paper's settings (Algorithm 1 on 16 GPUs):
``batch_size=256, lr=1e-5, warmup_ratio=0.1, epochs=5, archs_per_step=3`` on Wikipedia + BooksCorpus.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import UserError

OBJECTIVES = ("mlm", "kd")
# Keys that do not change what is computed step by step: a checkpoint resumes across changes of these.
RUN_ONLY_KEYS = frozenset({"out", "resume", "overwrite", "stop_after", "time_budget_s", "progress",
                           "checkpoint_every", "keep_checkpoints", "eval_every", "eval_sequences", "threads",
                           "tensorboard", "cache_dir", "log_every"})


class TrainConfigError(UserError):
    """A training setting that is unknown, missing or out of range."""


@dataclass
class TrainConfig:
    """Settings shared by `train-supernet` and `train-model`."""

    out: str = ""
    corpus: list[str] = field(default_factory=list)  # text files / folders
    tokenizer: str | None = None  # HF tokenizer folder or name; None trains WordPiece on the corpus
    tokenizer_vocab_size: int = 8000  # only when training a tokenizer
    max_seq_length: int = 128
    cache_dir: str | None = None  # tokenized corpus cache (default ~/.cache/autotinybert or $AUTOTINYBERT_CACHE)
    val_fraction: float = 0.01
    val_max_sequences: int = 2000
    objective: str = "mlm"  # mlm | kd
    teacher: str | None = None  # kd: HF encoder folder or name loadable with AutoModel
    kd_attention_weight: float = 1.0
    kd_hidden_weight: float = 1.0
    batch_size: int = 32  # global sequences per optimizer step
    workers: int | None = None  # Algorithm 1 workers N (sub-batches per step); default: the number of processes
    archs_per_step: int = 3  # M: sub-models each worker trains per step
    grad_accum: int = 1  # micro-batches per worker sub-batch (memory only; same maths)
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-6
    max_grad_norm: float = 1.0
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    seed: int = 0
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch intra-op threads per process
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 200
    eval_sequences: int = 256
    log_every: int = 1
    stop_after: int | None = None  # stop (with a checkpoint) after this step, as if killed; resume continues
    time_budget_s: float | None = None  # stop (with a checkpoint) once this much wall time has passed
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.corpus, (str, Path)):
            self.corpus = [str(self.corpus)]
        self.corpus = [str(c) for c in self.corpus]
        for name in ("out", "tokenizer", "teacher", "cache_dir", "model", "space"):  # paths -> str (JSON-able)
            if isinstance(getattr(self, name, None), Path):
                setattr(self, name, str(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise TrainConfigError(f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")
        if self.objective == "kd" and not self.teacher:
            raise TrainConfigError("objective 'kd' needs a teacher: set teacher (--teacher) to a BERT-like model "
                                   "folder or name, e.g. the all-MiniLM-L6-v2 folder")
        positive = ("batch_size", "archs_per_step", "grad_accum", "max_seq_length", "checkpoint_every",
                    "keep_checkpoints", "eval_every", "eval_sequences", "log_every", "val_max_sequences")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("workers", "max_steps", "stop_after", "threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise TrainConfigError(f"{name} must be a positive integer or null, got {value!r}")
        if not self.lr > 0:
            raise TrainConfigError(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise TrainConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not self.epochs > 0:
            raise TrainConfigError(f"epochs must be > 0, got {self.epochs!r}")
        if self.resume and self.overwrite:
            raise TrainConfigError("resume and overwrite contradict each other: pick one")

    # ----- building -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise TrainConfigError(f"a training config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainConfigError(f"unknown training config key(s) {unknown} for {cls.__name__}; "
                                   f"known keys: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise TrainConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise TrainConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise TrainConfigError(f"config file {path} must hold a mapping of keys to values")
        return cls.from_dict({**data, **{k: v for k, v in overrides.items() if v is not None}})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        """Hash of every setting that changes the computation: checkpoints of another fingerprint are refused."""
        data = {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY_KEYS}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def compute_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY_KEYS}


@dataclass
class TrainSupernetConfig(TrainConfig):
    """`train-supernet`: one-shot training of a SuperBERT over `space` (Algorithm 1)."""

    space: Any = "cpu-mlm"  # preset name, YAML path or dict
    sandwich: bool = False  # BigNAS: among each worker's M archs, always the max and the min

    def validate(self) -> None:
        super().validate()
        if self.sandwich and self.archs_per_step < 2:
            raise TrainConfigError("sandwich needs archs_per_step >= 2 (the max and the min arch)")


@dataclass
class TrainModelConfig(TrainConfig):
    """`train-model`: further training of one extracted standalone model (paper §3.6): no warm-up, M = 1."""

    model: str = ""  # folder written by `autotinybert extract` (or any AutoTinyBert/BERT MLM folder)
    warmup_ratio: float = 0.0
    archs_per_step: int = 1

    def validate(self) -> None:
        super().validate()
        if not self.model:
            raise TrainConfigError("train-model needs model (--model DIR), an extracted model folder")
