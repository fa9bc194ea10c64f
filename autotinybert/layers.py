"""The one BERT implementation, elastic in every dimension.

Both the SuperBERT (`supernet.py`) and the standalone Hugging Face models (`modeling.py`) are built from these
modules. Parameters are allocated at a maximum size; `forward` takes an `Arch` and uses `layers` of the stored
layers (the first ones, or those a supernet's depth rule picks: `Encoder.forward(layer_ids=...)`) and the top-left
block of every matrix (first rows = first output features, first columns = first input features), the first
entries of every bias, LayerNorm and embedding column. A standalone model calls the same code with its own arch,
so every slice there is the whole tensor and is skipped.

Module and parameter names follow `transformers`' BERT exactly (``encoder.layer.0.attention.self.query`` ...),
so a standalone model with qkv == hidden is weight-for-weight a stock `BertModel`.

Gradients of sliced parameters (`sliced`): autograd's own slicing backward hands every use of ``W[:out, :in]``
a zero-filled gradient of W's full size, which `AccumulateGrad` then adds -- per backward, for the (V, H) word
embeddings and every used layer's full matrices, whatever the sub-model's size. Here the backward of a slice adds the
slice's gradient in place into ``W.grad[:out, :in]`` (allocated once, at W's full size, the first time) and gives
autograd nothing for W; a sliced linear layer's weight gradient is one GEMM accumulating into that block. So a sliced parameter's gradient lands in ``.grad`` only: `torch.autograd.grad` with respect
to it returns None. `reference_gradients()` switches back to plain autograd slicing (tests, benchmarks).

Attention layouts of the Q/K/V output features (and of the attention-output input features):

* ``head_major`` (standard BERT, and the ``heads`` cut): feature ``i * head_size + j`` is dimension j of head i,
  so the first ``h * head_size`` features are the first h heads.
* ``dim_major`` (the ``dims`` cut, supernets only): feature ``j * heads + i`` is dimension j of head i, so the
  first ``heads * d`` features are the first d dimensions of every head -- a contiguous slice, no gather.
  Extraction permutes these features back to head-major.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch import Arch

Layout = Literal["head_major", "dim_major"]
AttentionRequest = Literal["none", "last", "all"]
Probe = Callable[[str, Tensor], None]
"""Called by `Layer.forward` with intermediate tensors (importance scores read activations through it)."""
LayerProbe = Callable[[str, int, Tensor], None]
"""`Probe` plus the index of the stored layer that reported."""


def _probe_at(probe: LayerProbe, index: int, name: str, tensor: Tensor) -> None:
    probe(name, index, tensor)


_reference_gradients = False  # `reference_gradients()`: plain autograd slicing, full-size gradients per use


@contextlib.contextmanager
def reference_gradients() -> Iterator[None]:
    """Within the block, sliced parameters get their gradients from plain autograd slicing (a full-size gradient
    per use, summed by `AccumulateGrad`): the reference the in-place path is tested and benchmarked against."""
    global _reference_gradients
    previous, _reference_gradients = _reference_gradients, True
    try:
        yield
    finally:
        _reference_gradients = previous


def _grad_buffer(param: Tensor) -> Tensor:
    """param.grad, created (zero, full size) the first time: it then persists until someone sets it to None."""
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    return param.grad


class _SliceAccumulate(torch.autograd.Function):
    """``param[index]`` whose backward adds the slice's gradient into ``param.grad[index]`` in place."""

    @staticmethod
    def forward(ctx, param: Tensor, index: tuple[slice, ...]) -> Tensor:
        ctx.param, ctx.index = param, index  # the leaf itself, not its value: nothing to version-check
        return param[index]

    @staticmethod
    def backward(ctx, grad: Tensor):
        _grad_buffer(ctx.param)[ctx.index].add_(grad)
        return None, None


def sliced(param: Tensor, *sizes: int) -> Tensor:
    """The top-left block ``param[:sizes[0], :sizes[1], ...]`` (a view; the parameter itself when full-size).

    In training, the block's gradient is added in place into ``param.grad`` (see the module docstring); a full-size
    use goes through autograd as usual (so a standalone model, which never slices, is plain PyTorch)."""
    if all(s == n for s, n in zip(sizes, param.shape)):
        return param
    index = tuple(slice(0, s) for s in sizes)
    if _reference_gradients or not (param.is_leaf and param.requires_grad and torch.is_grad_enabled()):
        return param[index]
    return _SliceAccumulate.apply(param, index)


class _SlicedLinear(torch.autograd.Function):
    """``x @ W[:out, :in].T + b[:out]`` whose backward accumulates the weight gradient straight into
    ``W.grad[:out, :in]`` with one GEMM (``addmm_``: no (out, in) temporary, and no separate add into the strided
    block, which costs more than its size suggests) and the bias gradient into ``b.grad[:out]``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, out_features: int, in_features: int) -> Tensor:
        ctx.save_for_backward(x)
        ctx.weight, ctx.bias, ctx.sizes = weight, bias, (out_features, in_features)
        return F.linear(x, weight[:out_features, :in_features], None if bias is None else bias[:out_features])

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        o, i = ctx.sizes
        weight, bias = ctx.weight, ctx.bias
        grad_x = grad.matmul(weight[:o, :i]) if ctx.needs_input_grad[0] else None  # (..., in)
        g, x = grad.reshape(-1, o), x.reshape(-1, i)  # (N, out), (N, in)
        _grad_buffer(weight)[:o, :i].addmm_(g.t(), x)
        if bias is not None and bias.requires_grad:
            _grad_buffer(bias)[:o].add_(g.sum(0))
        return grad_x, None, None, None, None


def sliced_linear(x: Tensor, layer: nn.Linear, out_features: int, in_features: int) -> Tensor:
    """``x @ W[:out, :in].T + b[:out]`` on views of the full parameters (no copy; skipped when full-size)."""
    weight, bias = layer.weight, layer.bias
    if weight.shape == (out_features, in_features):
        return F.linear(x, weight, bias)
    if (not _reference_gradients and weight.requires_grad and torch.is_grad_enabled()
            and not torch.is_autocast_enabled(x.device.type)):  # under autocast, F.linear's graph owns the casts
        return _SlicedLinear.apply(x, weight, bias, out_features, in_features)
    bias = sliced(bias, out_features) if bias is not None else None
    return F.linear(x, sliced(weight, out_features, in_features), bias)


def sliced_layer_norm(x: Tensor, norm: nn.LayerNorm, size: int) -> Tensor:
    return F.layer_norm(x, (size,), sliced(norm.weight, size), sliced(norm.bias, size), norm.eps)


def split_heads(x: Tensor, heads: int, layout: Layout) -> Tensor:
    """(B, T, heads * d) -> (B, heads, T, d)."""
    B, T, width = x.shape
    d = width // heads
    if layout == "head_major":
        return x.view(B, T, heads, d).transpose(1, 2)
    # One small copy into (B, T, heads, d) order: attention kernels need each head's features contiguous, and
    # without it SDPA on CPU falls back from the fused kernel to its slow reference path.
    return x.view(B, T, d, heads).transpose(2, 3).contiguous().transpose(1, 2)


def merge_heads(x: Tensor, layout: Layout) -> Tensor:
    """(B, heads, T, d) -> (B, T, heads * d) in the given feature layout."""
    B, H, T, d = x.shape
    if layout == "head_major":
        return x.transpose(1, 2).reshape(B, T, H * d)
    return x.permute(0, 2, 3, 1).reshape(B, T, d * H)


def additive_mask(attention_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """(B, T) of 1 = token / 0 = padding -> (B, 1, 1, T) additive mask, or None when nothing is padded.

    Under torch.export (ONNX export) the mask is always applied: "is anything padded" depends on the data, which
    an exported graph cannot branch on."""
    if attention_mask is None or (not torch.compiler.is_exporting() and bool(attention_mask.all())):
        return None
    keep = attention_mask[:, None, None, :].to(torch.bool)
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, torch.finfo(dtype).min)


class Embeddings(nn.Module):
    def __init__(self, vocab_size: int, hidden: int, max_positions: int, type_vocab_size: int,
                 layer_norm_eps: float, dropout: float, pad_token_id: int | None):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=layer_norm_eps)
        self.dropout = dropout

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None, position_ids: Tensor | None,
                hidden: int, words: Tensor | None = None) -> Tensor:
        """words: the (B, T, hidden) word vectors when the caller looked them up already (`TiedEmbedding`)."""
        B, T = input_ids.shape
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings "
                             f"({self.position_embeddings.num_embeddings}); truncate the input")
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)[None, :]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if words is None:
            words = self.word_embeddings(input_ids)[..., :hidden]
        # Position and token-type rows are looked up in the first `hidden` columns of their (small) tables.
        types, positions = self.token_type_embeddings.weight, self.position_embeddings.weight
        types = F.embedding(token_type_ids, sliced(types, types.shape[0], hidden))  # (B, T, hidden)
        positions = F.embedding(position_ids, sliced(positions, positions.shape[0], hidden))  # (1, T, hidden)
        x = words + (types + positions)
        x = sliced_layer_norm(x, self.LayerNorm, hidden)
        return F.dropout(x, self.dropout, self.training)


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, qkv: int, dropout: float):
        super().__init__()
        self.query = nn.Linear(hidden, qkv)
        self.key = nn.Linear(hidden, qkv)
        self.value = nn.Linear(hidden, qkv)
        self.dropout = dropout


class DenseNorm(nn.Module):
    """Dense projection back to the hidden size, then dropout, residual and LayerNorm (BERT's *Output blocks)."""

    def __init__(self, in_features: int, hidden: int, layer_norm_eps: float, dropout: float):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=layer_norm_eps)
        self.dropout = dropout

    def forward(self, x: Tensor, residual: Tensor, hidden: int, in_features: int) -> Tensor:
        x = F.dropout(sliced_linear(x, self.dense, hidden, in_features), self.dropout, self.training)
        return sliced_layer_norm(x + residual, self.LayerNorm, hidden)


class Attention(nn.Module):
    def __init__(self, hidden: int, qkv: int, layer_norm_eps: float, hidden_dropout: float, attention_dropout: float):
        super().__init__()
        self.self = SelfAttention(hidden, qkv, attention_dropout)
        self.output = DenseNorm(qkv, hidden, layer_norm_eps, hidden_dropout)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, ffn: int):
        super().__init__()
        self.dense = nn.Linear(hidden, ffn)


class Layer(nn.Module):
    def __init__(self, hidden: int, ffn: int, qkv: int, layer_norm_eps: float, hidden_dropout: float,
                 attention_dropout: float):
        super().__init__()
        self.attention = Attention(hidden, qkv, layer_norm_eps, hidden_dropout, attention_dropout)
        self.intermediate = Intermediate(hidden, ffn)
        self.output = DenseNorm(ffn, hidden, layer_norm_eps, hidden_dropout)

    def forward(self, x: Tensor, mask: Tensor | None, arch: Arch, layout: Layout,
                need_probs: bool, probe: Probe | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(output (B, T, hidden), attention probabilities, raw scores): with `need_probs`, the probabilities and
        the pre-softmax scores q.k / sqrt(d) *before* the padding mask, each (B, h, T, T) (what TinyBERT-style
        distillation fits); otherwise None, None (fused attention)."""
        # x: (B, T, hidden); mask: (B, 1, 1, T) additive or None
        hidden, qkv, heads = arch.hidden, arch.qkv, arch.heads
        attn = self.attention.self
        q = split_heads(sliced_linear(x, attn.query, qkv, hidden), heads, layout)  # (B, h, T, d)
        k = split_heads(sliced_linear(x, attn.key, qkv, hidden), heads, layout)
        v = split_heads(sliced_linear(x, attn.value, qkv, hidden), heads, layout)
        if probe is not None:
            probe("query", q)
            probe("key", k)
        p_drop = attn.dropout if self.training else 0.0
        raw = None
        if need_probs:
            raw = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)  # (B, h, T, T), before the mask
            scores = raw + mask if mask is not None else raw
            probs = scores.softmax(dim=-1)
            context = torch.matmul(F.dropout(probs, p_drop, self.training), v)
        else:
            probs = None
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)
        x = self.attention.output(merge_heads(context, layout), x, hidden, qkv)
        h = F.gelu(sliced_linear(x, self.intermediate.dense, arch.ffn, hidden))  # (B, T, ffn)
        out = self.output(h, x, hidden, arch.ffn)
        if probe is not None:
            probe("context", context)  # (B, h, T, d): each head's output before the attention-output dense
            probe("attention_norm", x)  # (B, T, hidden)
            probe("ffn", h)  # (B, T, ffn), after the activation
            probe("output_norm", out)  # (B, T, hidden)
        return out, probs, raw


@dataclass
class EncoderOutput:
    last_hidden_state: Tensor  # (B, T, hidden)
    hidden_states: tuple[Tensor, ...] | None  # embeddings then every layer, each (B, T, hidden)
    attentions: tuple[Tensor, ...] | None  # (B, h, T, T) per requested layer ("last": one entry)
    attention_scores: tuple[Tensor, ...] | None = None  # the same layers' raw pre-softmax scores, before the mask


class Encoder(nn.Module):
    def __init__(self, num_layers: int, hidden: int, ffn: int, qkv: int, layer_norm_eps: float,
                 hidden_dropout: float, attention_dropout: float):
        super().__init__()
        self.layer = nn.ModuleList(
            Layer(hidden, ffn, qkv, layer_norm_eps, hidden_dropout, attention_dropout) for _ in range(num_layers)
        )

    def forward(self, x: Tensor, mask: Tensor | None, arch: Arch, layout: Layout,
                output_hidden_states: bool = False, attentions: AttentionRequest = "none",
                layer_ids: Sequence[int] | None = None, probe: LayerProbe | None = None) -> EncoderOutput:
        """layer_ids: which of the stored layers run, in order (default the first `arch.layers`; a supernet's
        depth rule may pick others); probe: called with (name, layer index, tensor) at the points `Layer` reports."""
        all_hidden = [x] if output_hidden_states else None
        all_probs = [] if attentions != "none" else None
        all_scores = [] if attentions != "none" else None
        ids = range(arch.layers) if layer_ids is None else layer_ids
        for i, index in enumerate(ids):
            need = attentions == "all" or (attentions == "last" and i == arch.layers - 1)
            layer_probe = None if probe is None else functools.partial(_probe_at, probe, index)
            x, probs, scores = self.layer[index](x, mask, arch, layout, need, layer_probe)
            if need:
                all_probs.append(probs)
                all_scores.append(scores)
            if output_hidden_states:
                all_hidden.append(x)
        return EncoderOutput(
            last_hidden_state=x,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_probs) if all_probs is not None else None,
            attention_scores=tuple(all_scores) if all_scores is not None else None,
        )


class PredictionHeadTransform(nn.Module):
    def __init__(self, hidden: int, layer_norm_eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=layer_norm_eps)

    def forward(self, x: Tensor, hidden: int) -> Tensor:
        return sliced_layer_norm(F.gelu(sliced_linear(x, self.dense, hidden, hidden)), self.LayerNorm, hidden)


def mlm_logits(transform: PredictionHeadTransform, decoder_weight: Tensor, decoder_bias: Tensor,
               x: Tensor, hidden: int) -> Tensor:
    """BERT's MLM head: transform, then project onto the (tied) word embeddings. x: (..., hidden) -> (..., V)."""
    decoder_weight = sliced(decoder_weight, decoder_weight.shape[0], hidden)
    return F.linear(transform(x, hidden), decoder_weight, decoder_bias)


class TiedEmbedding(torch.autograd.Function):
    """Both uses of the tied word-embedding matrix W (V, H_max) of a supernet, with one gradient buffer.

    Returns the looked-up rows ``W[input_ids, :h]`` (B, T, h) and the decoder view ``W[:, :h]`` (V, h). Used
    separately, each use would produce its own (V, H_max) gradient (a zero-filled buffer per use, then a sum);
    here the backward adds both into ``W.grad[:, :h]`` in place (as `sliced` does), so a step costs no (V, H_max)
    fill or add at all. Under `reference_gradients()` it returns one full-size gradient to autograd instead.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, input_ids: Tensor, hidden: int, padding_idx: int | None):
        ctx.save_for_backward(input_ids)
        ctx.weight, ctx.hidden, ctx.padding_idx = weight, hidden, padding_idx
        ctx.reference = _reference_gradients
        rows = F.embedding(input_ids, weight)[..., :hidden]
        return rows, weight[:, :hidden]

    @staticmethod
    def backward(ctx, grad_rows: Tensor | None, grad_decoder: Tensor | None):
        (input_ids,) = ctx.saved_tensors
        h, weight = ctx.hidden, ctx.weight
        if ctx.reference:
            dtype = (grad_rows if grad_rows is not None else grad_decoder).dtype
            full = torch.zeros(weight.shape, dtype=dtype, device=input_ids.device)
        else:
            full = _grad_buffer(weight)
        grad = full[:, :h]  # (V, h)
        if grad_decoder is not None:
            grad.add_(grad_decoder)
        if grad_rows is not None:
            ids, g = input_ids.reshape(-1), grad_rows.reshape(-1, h)
            if ctx.padding_idx is not None:  # nn.Embedding semantics: the padding row gets no lookup gradient
                g = g.masked_fill((ids == ctx.padding_idx)[:, None], 0.0)
            grad.index_add_(0, ids, g)
        return (full if ctx.reference else None), None, None, None
