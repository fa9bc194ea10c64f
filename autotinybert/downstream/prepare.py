"""A task's examples made ready for fine-tuning: subsampled (budget mode), tokenized, and cut into tensor batches.

    prepared = prepare(spec, data, tokenizer, cfg)
    batch = batch_tensors(prepared.train, index, pad_id, with_labels=True, device=device)   # -> model(**batch)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from ..seeding import dev_subset_rng, train_subset_rng
from .config import FinetuneConfig
from .data import TaskData
from .features import Encoded, collate, encode_pairs
from .squad import SquadFeatures, build_features
from .tasks import TaskSpec


@dataclass
class Prepared:
    """Tokenized training data and dev splits, ready for batching."""

    train: Encoded | SquadFeatures
    dev: dict[str, Encoded | SquadFeatures]
    dev_examples: dict[str, tuple]
    n_train: int


def _subsample(items: tuple, limit: int | None, rng: np.random.Generator) -> tuple:
    if limit is None or len(items) <= limit:
        return items
    keep = np.sort(rng.choice(len(items), size=limit, replace=False))
    return tuple(items[i] for i in keep)


def prepare(spec: TaskSpec, data: TaskData, tokenizer, cfg: FinetuneConfig) -> Prepared:
    """Subsets depend on `split_seed` (not `seed`), so that different seeds / candidates see the same examples."""
    train = _subsample(data.train, cfg.max_train_examples, train_subset_rng(cfg.split_seed))
    if not train:
        raise UserError(f"{spec.name}: no training examples (train file missing or empty)")
    dev_examples = {split: _subsample(ex, cfg.max_eval_examples, dev_subset_rng(cfg.split_seed, i))
                    for i, (split, ex) in enumerate(data.dev.items())}
    if spec.kind == "span":
        kw = dict(max_seq_length=cfg.max_seq_length, doc_stride=cfg.doc_stride, max_query_length=cfg.max_query_length)
        return Prepared(build_features(tokenizer, train, training=True, **kw),
                        {s: build_features(tokenizer, ex, **kw) for s, ex in dev_examples.items()},
                        dev_examples, len(train))
    reg = spec.kind == "regression"
    return Prepared(encode_pairs(tokenizer, train, cfg.max_seq_length, reg),
                    {s: encode_pairs(tokenizer, ex, cfg.max_seq_length, reg) for s, ex in dev_examples.items()},
                    dev_examples, len(train))


def batch_tensors(data: Encoded | SquadFeatures, index: np.ndarray, pad_id: int, with_labels: bool,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """The model inputs of rows `index` (padded to the longest), plus labels / answer positions if asked."""
    if isinstance(data, SquadFeatures):
        feats = [data.features[i] for i in index]
        batch = collate([f.input_ids for f in feats], [f.token_type_ids for f in feats], pad_id)
        if with_labels:
            batch["start_positions"] = torch.tensor([f.start_position for f in feats])
            batch["end_positions"] = torch.tensor([f.end_position for f in feats])
    else:
        batch = collate([data.input_ids[i] for i in index], [data.token_type_ids[i] for i in index], pad_id)
        if with_labels:
            batch["labels"] = torch.from_numpy(data.labels[index])
    return {k: v.to(device) for k, v in batch.items()}
