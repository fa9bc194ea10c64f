"""Budget-mode scoring for the search: extract an arch from the supernet, fine-tune briefly, return the scores.

    scores = score_supernet_arch(supernet, Arch.parse("4-256-480-4-256"), ["squad", "mnli"], data_dir, tok_dir)
    fitness = sum(scores.values()) / len(scores)     # the official code's fitness: mean of SQuAD and MNLI
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import UserError
from .config import FinetuneConfig
from .data import is_hf, task_folder
from .tasks import TaskSpec, parse_tasks


@dataclass
class Budget:
    """How much fine-tuning one candidate gets. Defaults fit a search on a CPU (about a minute per task for a
    small arch); set a field to None to lift that cap."""

    max_train_examples: int | None = 2000
    max_steps: int | None = 150
    max_eval_examples: int | None = 500
    epochs: float | None = None              # None: the task's Table D.1 epochs (then capped by max_steps)
    learning_rate: float | None = None       # None: Table D.1
    batch_size: int | None = None            # None: Table D.1 (GLUE 32, SQuAD 16)
    max_seq_length: int | None = 128         # GLUE tasks
    squad_max_seq_length: int = 256          # shorter than 384 to save time; stride stays 128
    squad_article_split: float = 0.8         # used only when the data has no SQuAD train file
    eval_every: int | None = None            # None: at the end (and at every epoch end)
    device: str = "cpu"
    threads: int | None = None
    split_seed: int = 0                      # fixes the train/eval subsets: every candidate sees the same data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Budget:
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"unknown budget setting(s) {unknown}; known: {', '.join(f.name for f in fields(cls))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def finetune_config(self, spec: TaskSpec, data_dir: str | Path, seed: int) -> FinetuneConfig:
        """The `FinetuneConfig` this budget means for `spec`."""
        split = None
        if spec.kind == "span" and not is_hf(data_dir):
            if not (task_folder(spec, data_dir) / spec.train_file).is_file():
                split = self.squad_article_split
        return FinetuneConfig.from_dict(dict(
            learning_rate=self.learning_rate, epochs=self.epochs, batch_size=self.batch_size,
            max_seq_length=self.squad_max_seq_length if spec.kind == "span" else self.max_seq_length,
            max_train_examples=self.max_train_examples, max_steps=self.max_steps,
            max_eval_examples=self.max_eval_examples, eval_every=self.eval_every, squad_article_split=split,
            device=self.device, threads=self.threads, seed=seed, split_seed=self.split_seed, save_model="none",
            progress=False))


@lru_cache(maxsize=4)
def _tokenizer_from(path: str):
    from .features import load_tokenizer

    return load_tokenizer(path)


def score_supernet_arch(supernet, arch, tasks, data_dir: str | Path, tokenizer, budget: Budget | None = None,
                        seed: int = 0) -> dict[str, float]:
    """task -> main dev score (fraction; the best seen during the budgeted run) of `arch` extracted from `supernet`.

    `supernet`: a `SuperBertForMaskedLM`; `arch`: an `Arch` or its string; `tasks`: names or ``"squad,mnli"``;
    `tokenizer`: a tokenizer folder or a loaded HF tokenizer. The supernet is not modified.
    """
    from ..extract import extract
    from ..seeding import forked_global_rng
    from .model import head_config
    from .train import finetune

    budget = budget or Budget()
    specs = parse_tasks(tasks)
    tok = _tokenizer_from(str(tokenizer)) if isinstance(tokenizer, (str, Path)) else tokenizer
    if getattr(tok, "vocab_size", None) is not None and len(tok) > supernet.config.vocab_size:
        raise UserError(f"tokenizer has {len(tok)} tokens but the supernet's vocabulary has "
                        f"{supernet.config.vocab_size}; use the tokenizer the supernet was trained with")
    configs = {s.name: budget.finetune_config(s, data_dir, seed) for s in specs}  # checks data before training
    supernet_keys = set(supernet.state_dict())
    scores = {}
    for spec in specs:
        head = "question-answering" if spec.kind == "span" else "sequence-classification"
        with forked_global_rng():  # extract's throw-away head init must not move the caller's RNG
            model = extract(supernet, arch, head=head, **head_config(spec))
        fresh = {k for k in model.state_dict() if k not in supernet_keys}  # pooler and task head
        result = finetune(model, spec, data_dir, None, configs[spec.name], tokenizer=tok, new_weights=fresh)
        scores[spec.name] = result.best_score
    return scores
