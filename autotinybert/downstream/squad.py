"""SQuAD v1.1 features and span decoding, as in the original BERT ``run_squad.py``.

A paragraph longer than the window is cut into overlapping windows: each window holds
``[CLS] question [SEP] context-piece [SEP]`` (at most `max_seq_length` tokens) and the next window starts
`doc_stride` context tokens later. A context token is scored only in the window where it has the most context on
both sides. Decoding takes the `n_best` start and end logits of every window, keeps spans inside the context with
``end >= start`` and at most `max_answer_length` tokens, and returns the best span's original text (through the
fast tokenizer's character offsets, so casing and accents are kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import UserError
from .data import SquadExample


@dataclass
class SquadFeature:
    """One window of one question."""

    example_index: int
    input_ids: list[int]
    token_type_ids: list[int]
    context_start: int                 # position of the first context token in input_ids
    offsets: list[tuple[int, int]]     # character span in the context of each context token of this window
    max_context: list[bool]            # per context token: is this its best window?
    start_position: int = 0            # training target; 0 ([CLS]) when the answer is not inside the window
    end_position: int = 0


@dataclass
class SquadFeatures:
    features: list[SquadFeature] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(f.input_ids) for f in self.features), dtype=np.int64, count=len(self.features))


def window_starts(n_tokens: int, window: int, doc_stride: int) -> list[int]:
    """Start offsets of the context windows (BERT: advance by `doc_stride` until the end is covered)."""
    starts, start = [], 0
    while True:
        starts.append(start)
        if start + window >= n_tokens:
            return starts
        start += min(window, doc_stride)


def max_context_flags(starts: Sequence[int], window: int, n_tokens: int) -> list[list[bool]]:
    """For each window, whether each of its tokens has its maximum context there (BERT's `_check_is_max_context`)."""
    best: dict[int, tuple[float, int]] = {}
    for w, start in enumerate(starts):
        length = min(window, n_tokens - start)
        for pos in range(start, start + length):
            left, right = pos - start, start + length - 1 - pos
            score = min(left, right) + 0.01 * length
            if pos not in best or score > best[pos][0]:
                best[pos] = (score, w)
    return [[best[pos][1] == w for pos in range(start, start + min(window, n_tokens - start))]
            for w, start in enumerate(starts)]


def build_features(tokenizer, examples: Sequence[SquadExample], max_seq_length: int = 384, doc_stride: int = 128,
                   max_query_length: int = 64, training: bool = False) -> SquadFeatures:
    """Windows for every question; with `training`, start/end token targets from the first gold answer."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        raise UserError("SQuAD features need a tokenizer with [CLS] and [SEP] tokens (a BERT-style tokenizer)")
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("SQuAD features need a fast tokenizer (tokenizer.json) for character offsets")
    questions = tokenizer([e.question for e in examples], add_special_tokens=False)["input_ids"]
    # Contexts repeat across questions: tokenize each distinct paragraph once.
    contexts = list(dict.fromkeys(e.context for e in examples))
    ctx_enc = tokenizer(contexts, add_special_tokens=False, return_offsets_mapping=True)
    ctx_index = {c: i for i, c in enumerate(contexts)}
    out = SquadFeatures()
    for ei, ex in enumerate(examples):
        q = questions[ei][:max_query_length]
        ci = ctx_index[ex.context]
        ids, offsets = ctx_enc["input_ids"][ci], ctx_enc["offset_mapping"][ci]
        window = max_seq_length - len(q) - 3
        if window < 1:
            raise UserError(f"max_seq_length {max_seq_length} leaves no room for the context after a "
                            f"{len(q)}-token question; raise max_seq_length or lower max_query_length")
        target = None
        if training and ex.answers:
            a_start = ex.answer_starts[0]
            a_end = a_start + len(ex.answers[0])  # exclusive character end
            tok = [i for i, (s, e) in enumerate(offsets) if e > a_start and s < a_end and e > s]
            if tok:
                target = (tok[0], tok[-1])
        starts = window_starts(len(ids), window, doc_stride)
        flags = max_context_flags(starts, window, len(ids))
        for w, start in enumerate(starts):
            end = min(start + window, len(ids))
            feature = SquadFeature(
                example_index=ei,
                input_ids=[cls_id, *q, sep_id, *ids[start:end], sep_id],
                token_type_ids=[0] * (len(q) + 2) + [1] * (end - start + 1),
                context_start=len(q) + 2,
                offsets=[tuple(o) for o in offsets[start:end]],
                max_context=flags[w],
            )
            if target is not None and start <= target[0] and target[1] < end:
                feature.start_position = target[0] - start + feature.context_start
                feature.end_position = target[1] - start + feature.context_start
            out.features.append(feature)
    return out


def decode_spans(examples: Sequence[SquadExample], features: SquadFeatures, start_logits: Sequence[np.ndarray],
                 end_logits: Sequence[np.ndarray], n_best: int = 20, max_answer_length: int = 30) -> dict[str, str]:
    """qid -> predicted answer text: the best-scoring valid span (start + end logit) over all of a question's windows.

    `start_logits[i]` / `end_logits[i]` are feature i's logits over its own tokens (any padding cut off).
    """
    best: dict[int, tuple[float, str]] = {}
    for fi, feat in enumerate(features.features):
        s_log, e_log = np.asarray(start_logits[fi]), np.asarray(end_logits[fi])
        n_ctx = len(feat.offsets)
        lo, hi = feat.context_start, feat.context_start + n_ctx  # context token positions [lo, hi)
        s_top = np.argsort(-s_log[lo:hi], kind="stable")[:n_best] + lo
        e_top = np.argsort(-e_log[lo:hi], kind="stable")[:n_best] + lo
        context = examples[feat.example_index].context
        for s in s_top:
            if not feat.max_context[s - lo]:
                continue
            for e in e_top:
                if e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(s_log[s] + e_log[e])
                if feat.example_index not in best or score > best[feat.example_index][0]:
                    text = context[feat.offsets[s - lo][0]:feat.offsets[e - lo][1]]
                    best[feat.example_index] = (score, text)
    return {ex.qid: best[i][1] if i in best else "" for i, ex in enumerate(examples)}
