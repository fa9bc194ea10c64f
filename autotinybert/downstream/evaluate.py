"""Dev-set scores of a fine-tuned model: every metric of the task, on each prepared dev split."""

from __future__ import annotations

import numpy as np
import torch

from .config import FinetuneConfig
from .features import eval_batches
from .metrics import glue_metrics, squad_metrics
from .prepare import Prepared, batch_tensors
from .squad import decode_spans
from .tasks import TaskSpec


@torch.inference_mode()
def evaluate_prepared(model, spec: TaskSpec, prepared: Prepared, cfg: FinetuneConfig, pad_id: int,
                      device: torch.device) -> dict[str, float]:
    """Every metric of `spec` on the prepared dev split(s); MNLI adds ``matched_`` / ``mismatched_`` keys."""
    was_training = model.training
    model.eval()
    per_split: dict[str, dict[str, float]] = {}
    for split, data in prepared.dev.items():
        examples = prepared.dev_examples[split]
        if spec.kind == "span":
            starts: list = [None] * len(data)
            ends: list = [None] * len(data)
            for index in eval_batches(data.lengths, cfg.eval_batch_size):
                out = model(**batch_tensors(data, index, pad_id, False, device))
                for row, i in enumerate(index):
                    n = len(data.features[i].input_ids)
                    starts[i] = out.start_logits[row, :n].float().cpu().numpy()
                    ends[i] = out.end_logits[row, :n].float().cpu().numpy()
            preds = decode_spans(examples, data, starts, ends, cfg.n_best, cfg.max_answer_length)
            per_split[split] = squad_metrics(preds, {e.qid: e.answers for e in examples})
        else:
            logits = np.zeros((len(data), spec.num_labels), dtype=np.float32)  # (examples, labels)
            for index in eval_batches(data.lengths, cfg.eval_batch_size):
                logits[index] = model(**batch_tensors(data, index, pad_id, False, device)).logits.float().cpu().numpy()
            preds = logits[:, 0] if spec.kind == "regression" else logits.argmax(-1)
            per_split[split] = glue_metrics(spec, preds, data.labels)
    model.train(was_training)
    if len(per_split) == 1:
        return next(iter(per_split.values()))
    # MNLI: matched is the headline number (paper's "MNLI" column); mismatched is reported beside it.
    flat = dict(per_split["dev_matched"])
    for split, metrics in per_split.items():
        for k, v in metrics.items():
            flat[f"{split.removeprefix('dev_')}_{k}"] = v
    return flat
