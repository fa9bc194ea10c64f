"""Held-out loss of a sub-model: used during training (max / min arch) and by the search as a loss proxy.

    proxy = LossProxy("runs/supernet", max_sequences=512)
    proxy(Arch.parse("3-192-512-3-192"))  # -> 4.87 (MLM cross-entropy on masked held-out positions)

Masks (MLM) are drawn once from `seed`, so every arch is scored on the same positions; for KD the teacher's
outputs are computed once and reused for every arch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..arch import Arch
from ..data.masking import MaskingSpec, mask_tokens, masking_spec_for
from ..errors import UserError
from .objectives import StudentModule, Teacher
from ..seeding import derive_seed

VALIDATION_NAME = "validation.safetensors"
PROJECTION_NAME = "kd_projection.safetensors"
RUN_CONFIG_NAME = "train_config.json"


class EvalSet:
    """Fixed evaluation batches: ids, attention masks, MLM labels (masks drawn once) and, for kd, teacher outputs."""

    def __init__(self, sequences: np.ndarray, pad_token_id: int, objective: str, batch_size: int, seed: int,
                 masking: MaskingSpec | None = None, teacher: Teacher | None = None,
                 device: torch.device | str = "cpu"):
        self.objective = objective
        self.batches: list[dict[str, Any]] = []
        data = torch.as_tensor(np.asarray(sequences, dtype=np.int64))
        for index, start in enumerate(range(0, len(data), batch_size)):
            ids = data[start:start + batch_size]
            attention_mask = (ids != pad_token_id).long()
            batch: dict[str, Any] = {"attention_mask": attention_mask.to(device)}
            if objective == "mlm":
                generator = torch.Generator().manual_seed(derive_seed(seed, index, purpose="eval-mask"))
                masked = mask_tokens(ids, masking, generator)
                batch.update(input_ids=masked.input_ids.to(device), labels=masked.labels.to(device),
                             weight=int((masked.labels != -100).sum()))
            else:
                ids = ids.to(device)
                batch.update(input_ids=ids, teacher=teacher(ids, batch["attention_mask"]),
                             weight=int(attention_mask.sum()))
            self.batches.append(batch)

    def __len__(self) -> int:
        return len(self.batches)


@torch.no_grad()
def evaluate_terms(module: StudentModule, eval_set: EvalSet, arch: Arch) -> dict[str, float]:
    """Mean held-out loss of `arch` and of each of its terms (kd: kd_attention, kd_hidden), weighted by masked
    positions for MLM, by real tokens for KD: {"loss": ..., "kd_attention": ..., ...}."""
    was_training = module.training
    module.eval()
    totals: dict[str, float] = {}
    weight = 0
    for batch in eval_set.batches:
        out = module(batch["input_ids"], batch["attention_mask"], arch=arch, labels=batch.get("labels"),
                     teacher=batch.get("teacher"))
        for name, value in {"loss": out.loss, **out.terms}.items():
            totals[name] = totals.get(name, 0.0) + float(value) * batch["weight"]
        weight += batch["weight"]
    module.train(was_training)
    return {name: total / max(weight, 1) for name, total in totals.items()}


def evaluate(module: StudentModule, eval_set: EvalSet, arch: Arch) -> float:
    """Mean held-out loss of `arch` (weighted by masked positions for MLM, by real tokens for KD)."""
    return evaluate_terms(module, eval_set, arch)["loss"]


def load_run_config(supernet_dir: Path) -> dict[str, Any]:
    file = Path(supernet_dir) / RUN_CONFIG_NAME
    if not file.is_file():
        raise UserError(f"{supernet_dir} has no {RUN_CONFIG_NAME}: it was not written by train-supernet, so its "
                        "validation split is unknown")
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{file} cannot be read ({err}); the supernet folder is damaged: copy it again, or train "
                        "it again") from None


class LossProxy:
    """Held-out loss of any sub-model of a trained supernet, on the run's own validation split."""

    def __init__(self, supernet_dir: str | Path, *, max_sequences: int | None = None, batch_size: int = 32,
                 seed: int = 0, device: str = "cpu"):
        from ..data.tokenizer import load_tokenizer
        from ..supernet import SuperBertForMaskedLM

        self.supernet_dir = Path(supernet_dir)
        run = load_run_config(self.supernet_dir)
        val_file = self.supernet_dir / VALIDATION_NAME
        if not val_file.is_file():
            raise UserError(f"{self.supernet_dir} has no {VALIDATION_NAME} (the held-out split of its training run)")
        self.device = torch.device(device)
        self.objective = run["objective"]
        self.supernet = SuperBertForMaskedLM.from_pretrained(self.supernet_dir, map_location="cpu")
        tokenizer = load_tokenizer(self.supernet_dir)
        sequences = load_file(str(val_file))["input_ids"].numpy()
        if max_sequences is not None:
            sequences = sequences[:max_sequences]
        teacher = None
        teacher_hidden = None
        if self.objective == "kd":
            teacher = Teacher(run["teacher"], device=self.device)
            teacher_hidden = teacher.hidden
        # a run written before `kd_attention` existed was trained on attention probabilities
        self.module = StudentModule(self.supernet, self.objective, teacher_hidden,
                                    run.get("kd_attention_weight", 1.0), run.get("kd_hidden_weight", 1.0),
                                    run.get("kd_attention", "probs"))
        if self.objective == "kd":
            projection = load_file(str(self.supernet_dir / PROJECTION_NAME))
            self.module.projection.load_state_dict({k.removeprefix("projection."): v for k, v in projection.items()})
        self.module.to(self.device).eval()
        self.eval_set = EvalSet(sequences, tokenizer.pad_token_id, self.objective, batch_size, seed,
                                masking_spec_for(tokenizer), teacher, self.device)
        self.num_sequences = len(sequences)

    def __call__(self, arch: Arch | str) -> float:
        arch = self.supernet.check_arch(arch)
        return evaluate(self.module, self.eval_set, arch)
