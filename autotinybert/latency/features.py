"""Architecture features for the latency predictors.

* `mlp_features`: the five hyper-parameters divided by a fixed scale (the paper / HAT: a regressor on the
  normalised architecture encoding).
* `boost_features`: what the boosted trees see besides the analytic model's estimate: the dimensions, the head
  size, and each width's alignment (remainders modulo 8, 16 and 64), since CPU GEMM kernels pick other code paths
  (and pad) when a width is not a multiple of the vector width, so latency jumps at particular widths.
* `analytic_terms`: the work one forward does, term by term, in millions of multiply-adds or elements for a
  ``batch x seq_len`` input. Latency is modelled as a non-negative combination of them, so each coefficient reads
  as "ms per million operations of that kind" (or ms per layer / per call for the overhead terms).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..arch import Arch

MLP_FEATURES = ("layers", "hidden", "ffn", "heads", "qkv")

ANALYTIC_TERMS = (
    "proj_macs",      # L * B*T * 4*h*q: Q, K, V and attention-output projections
    "ffn_macs",       # L * B*T * 2*h*f: the two FFN matrices
    "attn_macs",      # L * B * 2*T^2*q: scores Q K^T and context P V
    "softmax_elems",  # L * B * heads*T^2: softmax (and mask/scale) over the score matrix
    "hidden_elems",   # L * B*T*h: LayerNorms, residuals, biases on the hidden width
    "ffn_elems",      # L * B*T*f: GELU and bias on the FFN width
    "layer_calls",    # L: per-layer fixed cost (kernel launches, dispatch)
    "embed_elems",    # B*T*h: embedding lookups, sum and LayerNorm
    "pooler_macs",    # B*h^2: the pooler
    "fixed",          # 1: per-forward fixed cost
)


def mlp_features(archs: Sequence[Arch], scale: Sequence[float]) -> np.ndarray:
    """(N, 5) array of arch fields divided by `scale` (stored with the predictor)."""
    raw = np.array([[a.layers, a.hidden, a.ffn, a.heads, a.qkv] for a in archs], dtype=np.float64)
    return raw / np.asarray(scale, dtype=np.float64)


def analytic_terms(archs: Sequence[Arch], batch: int, seq_len: int) -> np.ndarray:
    """(N, len(ANALYTIC_TERMS)) array of per-forward work terms (millions, except the call counts)."""
    B, T, M = float(batch), float(seq_len), 1e-6
    rows = []
    for a in archs:
        L, h, f, q, heads = float(a.layers), float(a.hidden), float(a.ffn), float(a.qkv), float(a.heads)
        rows.append([
            L * B * T * 4 * h * q * M,
            L * B * T * 2 * h * f * M,
            L * B * 2 * T * T * q * M,
            L * B * heads * T * T * M,
            L * B * T * h * M,
            L * B * T * f * M,
            L,
            B * T * h * M,
            B * h * h * M,
            1.0,
        ])
    return np.array(rows, dtype=np.float64)


BOOST_FEATURES = (
    "layers", "hidden", "ffn", "heads", "qkv", "head_size",
    "hidden_mod8", "hidden_mod16", "hidden_mod64", "ffn_mod8", "ffn_mod16", "ffn_mod64",
    "qkv_mod16", "head_size_mod8", "head_size_mod16",
    "log_work",  # log of the matrix multiply-adds at batch x seq_len: how big the model is, for size-band effects
)


def boost_features(archs: Sequence[Arch], batch: int, seq_len: int) -> np.ndarray:
    """(N, len(BOOST_FEATURES)) array. Head size = qkv / heads (a float when qkv is not a multiple of heads)."""
    terms = analytic_terms(archs, batch, seq_len)
    rows = []
    for a, t in zip(archs, terms):
        head = a.qkv / a.heads
        rows.append([a.layers, a.hidden, a.ffn, a.heads, a.qkv, head,
                     a.hidden % 8, a.hidden % 16, a.hidden % 64, a.ffn % 8, a.ffn % 16, a.ffn % 64,
                     a.qkv % 16, head % 8, head % 16,
                     float(np.log(t[0] + t[1] + t[2] + t[8] + 1e-6))])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(BOOST_FEATURES))
