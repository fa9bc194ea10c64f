"""Fine-tuning settings: one typed dataclass, Table D.1 defaults per task, every field overridable.

    cfg = FinetuneConfig.from_dict({"epochs": 2, "max_train_examples": 8000})   # unknown key -> UserError
    resolved = cfg.resolve(get_task("sst2"))   # fills learning rate / epochs / batch / length from Table D.1
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError
from .tasks import TaskSpec

SaveModel = Literal["final", "best", "none"]
_FLOAT_FIELDS = ("learning_rate", "epochs", "warmup_proportion", "weight_decay", "adam_epsilon", "max_grad_norm",
                 "squad_article_split")


@dataclass
class FinetuneConfig:
    """How to fine-tune one task. ``None`` means "the task's Table D.1 default" (see `resolve`)."""

    learning_rate: float | None = None      # Table D.1: 1e-5 .. 3e-5 per task
    epochs: float | None = None             # Table D.1: 4, 5 or 10
    batch_size: int | None = None           # GLUE 32, SQuAD 16
    max_seq_length: int | None = None       # GLUE 128, SQuAD 384
    eval_batch_size: int = 64
    warmup_proportion: float = 0.1          # linear warm-up over this share of the steps, then linear decay to 0
    weight_decay: float = 0.01              # AdamW; not applied to biases and LayerNorm weights
    adam_epsilon: float = 1e-6              # as in the original BERT optimizer
    max_grad_norm: float = 1.0
    eval_every: int | None = None           # evaluate every N optimizer steps; None: at the end of every epoch
    seed: int = 0                           # data order, dropout and new-head initialisation
    # Budget mode (search): subsample / cap. Subsets are drawn with `split_seed`, so every model sees the same ones.
    max_train_examples: int | None = None
    max_steps: int | None = None
    max_eval_examples: int | None = None
    # SQuAD
    doc_stride: int = 128
    max_query_length: int = 64
    n_best: int = 20
    max_answer_length: int = 30
    squad_article_split: float | None = None  # e.g. 0.8: train/evaluate on an article split of the dev file
    split_seed: int = 0
    # Running
    device: str = "cpu"                     # "cpu", "cuda", "cuda:1", or "auto"
    threads: int | None = None              # torch intra-op threads while fine-tuning; None leaves torch's setting
    save_model: SaveModel = "final"         # which weights go to OUT/model: the final ones, the best on dev, or none
    progress: bool = True

    # ------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FinetuneConfig:
        """Build from a dict (YAML/JSON/CLI); an unknown key is a `UserError` naming it."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown fine-tuning setting(s) {unknown}; known settings: {', '.join(sorted(known))}")
        for name in _FLOAT_FIELDS:
            # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it plainly is.
            if isinstance(data.get(name), str):
                try:
                    data[name] = float(data[name])
                except ValueError:
                    pass  # reported by validate() with the field's name
        cfg = cls(**data)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, source: str | Path | dict | FinetuneConfig | None) -> FinetuneConfig:
        """A config from None (all defaults), a dict, an instance, or a YAML/JSON file."""
        if source is None:
            return cls()
        if isinstance(source, FinetuneConfig):
            source.validate()
            return source
        if isinstance(source, dict):
            return cls.from_dict(source)
        path = Path(source)
        if not path.is_file():
            raise UserError(f"fine-tuning config file {path} does not exist")
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
        except yaml.YAMLError as err:
            raise UserError(f"{path}: not valid YAML/JSON: {err}") from None
        if data is not None and not isinstance(data, dict):
            raise UserError(f"{path}: expected a mapping of setting: value, got {type(data).__name__}")
        return cls.from_dict(data)

    def override(self, **changes: Any) -> FinetuneConfig:
        """A copy with `changes` applied (``None`` values are ignored, so CLI flags left unset change nothing)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return FinetuneConfig.from_dict({**asdict(self), **changes})

    def resolve(self, spec: TaskSpec) -> FinetuneConfig:
        """Fill every ``None`` task default from `spec` (Table D.1)."""
        return replace(
            self,
            learning_rate=self.learning_rate if self.learning_rate is not None else spec.learning_rate,
            epochs=self.epochs if self.epochs is not None else spec.epochs,
            batch_size=self.batch_size if self.batch_size is not None else spec.batch_size,
            max_seq_length=self.max_seq_length if self.max_seq_length is not None else spec.max_seq_length,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ------------------------------------------------------------ checks

    def validate(self) -> None:
        def positive(name: str, allow_none: bool = True, integer: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            if integer:
                ok = ok and isinstance(value, int)
            if not ok:
                kind = "a positive integer" if integer else "a positive number"
                raise UserError(f"fine-tuning setting {name} must be {kind}, got {value!r}")

        for name in ("learning_rate", "epochs", "adam_epsilon", "max_grad_norm"):
            positive(name)
        for name in ("batch_size", "max_seq_length", "eval_every", "max_train_examples", "max_steps",
                     "max_eval_examples", "threads"):
            positive(name, integer=True)
        for name in ("eval_batch_size", "doc_stride", "max_query_length", "n_best", "max_answer_length"):
            positive(name, allow_none=False, integer=True)
        if not 0.0 <= float(self.warmup_proportion) < 1.0:
            raise UserError(f"warmup_proportion must be in [0, 1), got {self.warmup_proportion!r}")
        if float(self.weight_decay) < 0:
            raise UserError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.squad_article_split is not None and not 0.0 < float(self.squad_article_split) < 1.0:
            raise UserError(f"squad_article_split must be in (0, 1) (share of articles used for training), "
                            f"got {self.squad_article_split!r}")
        if self.save_model not in ("final", "best", "none"):
            raise UserError(f"save_model must be 'final', 'best' or 'none', got {self.save_model!r}")
        if self.max_seq_length is not None and self.max_seq_length < 8:
            raise UserError(f"max_seq_length {self.max_seq_length} is too short to hold a sentence")
        if not isinstance(self.device, str) or not self.device:
            raise UserError(f"device must be a string like 'cpu', 'cuda' or 'auto', got {self.device!r}")
        for name in ("seed", "split_seed"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be an integer, got {getattr(self, name)!r}")
