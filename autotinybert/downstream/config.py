"""Fine-tuning settings: one typed config, Table D.1 defaults per task, every key overridable.

    cfg = FinetuneConfig.from_dict({"epochs": 2, "max_train_examples": 8000})   # unknown key -> ConfigError
    resolved = cfg.resolve(get_task("sst2"))   # fills learning rate / epochs / batch / length from Table D.1
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from ..config import Config, Field, NameList, PathStr, path_field
from .tasks import TaskSpec

SaveModel = Literal["final", "best", "none"]


class FinetuneConfig(Config):
    """How to fine-tune one task. ``null`` means "the task's Table D.1 default" (see `resolve`)."""

    learning_rate: float | None = Field(None, gt=0)
    """Peak AdamW learning rate (Table D.1: 1e-5 .. 3e-5 per task)."""
    epochs: float | None = Field(None, gt=0)
    """Training epochs (Table D.1: 4, 5 or 10)."""
    batch_size: int | None = Field(None, gt=0)
    """Training batch size (GLUE 32, SQuAD 16)."""
    max_seq_length: int | None = Field(None, ge=8)
    """Tokens per example (GLUE 128, SQuAD 384)."""
    eval_batch_size: int = Field(64, gt=0)
    """Evaluation batch size."""
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    """Linear warm-up over this share of the steps, then linear decay to 0."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay (not on biases and LayerNorm weights)."""
    adam_epsilon: float = Field(1e-6, gt=0)
    """AdamW epsilon (as in the original BERT optimizer)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping norm."""
    eval_every: int | None = Field(None, gt=0)
    """Evaluate every N optimizer steps; null: at the end of every epoch."""
    seed: int = Field(0, ge=0)
    """Data order, dropout and new-head initialisation."""
    max_train_examples: int | None = Field(None, gt=0)
    """Budget: subsample the training set (drawn with split_seed, the same for every model)."""
    max_steps: int | None = Field(None, gt=0)
    """Budget: stop after N optimizer steps."""
    max_eval_examples: int | None = Field(None, gt=0)
    """Budget: evaluate on a fixed subset."""
    doc_stride: int = Field(128, gt=0)
    """SQuAD: stride between windows of a long context."""
    max_query_length: int = Field(64, gt=0)
    """SQuAD: tokens kept of a question."""
    n_best: int = Field(20, gt=0)
    """SQuAD: start/end candidates considered."""
    max_answer_length: int = Field(30, gt=0)
    """SQuAD: longest answer span in tokens."""
    squad_article_split: float | None = Field(None, gt=0, lt=1)
    """SQuAD without a train file: train on this share of the dev file's articles, evaluate on the rest."""
    split_seed: int = Field(0, ge=0)
    """Seed of the subsets (budget subsamples, the SQuAD article split)."""
    device: str = Field("cpu", min_length=1)
    """cpu, cuda, cuda:N or auto."""
    threads: int | None = Field(None, gt=0)
    """torch intra-op threads while fine-tuning; null leaves torch's setting."""
    save_model: SaveModel = "final"
    """Weights written to OUT/model: the final ones, the best on dev, or none."""
    progress: bool = True
    """Show progress bars."""

    def resolve(self, spec: TaskSpec) -> FinetuneConfig:
        """Fill every ``null`` task default from `spec` (Table D.1)."""
        return self.model_copy(update={
            "learning_rate": self.learning_rate if self.learning_rate is not None else spec.learning_rate,
            "epochs": self.epochs if self.epochs is not None else spec.epochs,
            "batch_size": self.batch_size if self.batch_size is not None else spec.batch_size,
            "max_seq_length": self.max_seq_length if self.max_seq_length is not None else spec.max_seq_length,
        })


class _ModelRunConfig(FinetuneConfig):
    """The fine-tuning settings + which model, which data, where to write."""

    model: PathStr = path_field("", names=True)
    """Model folder (autotinybert or any BERT-like HF model with its tokenizer)."""
    data: PathStr = path_field("", names=True)
    """Data folder in the GLUE layout (TASK/train.tsv, TASK/dev.tsv; glue/TASK also found) with squad/;
    or 'hf' for Hugging Face datasets (online, needs `datasets`)."""
    out: PathStr = path_field("")
    """Output folder."""
    overwrite: bool = False
    """Replace a non-empty out folder."""

    @field_validator("model", "data", "out")
    @classmethod
    def _required(cls, value, info):
        if not value:
            raise ValueError(f"required: give {info.field_name}=...")
        return value

    def settings(self) -> FinetuneConfig:
        """The fine-tuning settings alone."""
        return FinetuneConfig.model_validate(self.model_dump(include=set(FinetuneConfig.model_fields)))


class FinetuneCommandConfig(_ModelRunConfig):
    """`autotinybert finetune`: fine-tune one model on one task and score it with the official metric; writes
    OUT/result.json (best and final dev scores), OUT/config.json, OUT/history.jsonl and OUT/model/."""

    task: str = Field("", min_length=1)
    """cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, squad (or a registered task such as docpair)."""


class EvaluateCommandConfig(_ModelRunConfig):
    """`autotinybert evaluate`: fine-tune and score one model on several tasks; writes OUT/<task>/ and
    OUT/suite.json and prints scores like the paper's tables."""

    tasks: NameList = Field(default_factory=list, min_length=1)
    """Tasks, e.g. [sst2, mrpc, stsb, squad], a comma-separated string, or glue (all nine)."""
    resume: bool = True
    """Reuse finished tasks (OUT/<task>/result.json)."""
