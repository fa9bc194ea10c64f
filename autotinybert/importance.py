"""Importance ordering of a pre-trained BERT: rank its units, then permute its weights so that every sub-model's
slice (first heads / head dimensions / FFN neurons / hidden channels) keeps the most important ones.

    scores = ImportanceScores.zeros(arch)
    accumulate_taylor(scores, model, loss)            # per calibration batch: loss.backward() first
    accumulate_activation(scores, recorder)           # or: activations read through the model's probe
    ordering = ordering_from_scores(scores, arch, cut="dims")
    state = apply_ordering(state, arch, ordering)     # the same function, units in a new order

Units (all per layer except the hidden channels):

* ``heads`` (``heads`` cut): head i = its Q/K/V rows and its attention-output columns;
* ``qk`` / ``vo`` (``dims`` cut): dimension j of head i, Q and K together (the score q·k sums over j) and, apart,
  V together with the attention-output column it feeds (each head's dims are ranked on their own);
* ``ffn``: neuron n = intermediate row n and output column n;
* ``hidden``: channel c of the residual stream, in every tensor that reads or writes it (embeddings, every
  LayerNorm, Q/K/V columns, the output rows of both dense blocks, the MLM transform, the KD projection's columns).

Scores:

* ``taylor`` -- first-order Taylor (DynaBERT; Michel et al. 2019): sum over a unit's weights of |w * dL/dw|, summed
  over the calibration batches, L the training objective. The loss is taken in training mode (dropout on): when
  the objective distils the checkpoint into itself, L and its gradient are exactly 0 at the checkpoint in eval
  mode, while under dropout the gradient measures how much each unit's weights move the output
  (in expectation, the unit's contribution scaled by the dropout residual).
* ``activation`` -- activation magnitude (Minitron): the root mean square over real (non-padding) tokens of a
  head's output (its context vector), of a neuron's activation, of a hidden channel at every LayerNorm output
  (summed over them); for a Q/K dimension sqrt(E[q_j^2] E[k_j^2]), for a V dimension its context entry.

Reordering is exact (function-preserving): permuting heads, head dimensions, neurons or residual channels
consistently in every tensor leaves the model's outputs unchanged, except that the hidden states come out with
their channels permuted (``ordering.hidden``: new channel k is the checkpoint's channel ``hidden[k]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import Tensor

from .arch import Arch

METHODS = ("taylor", "activation")
Method = Literal["taylor", "activation"]
UNITS = ("heads", "qk", "vo", "ffn", "hidden")


@dataclass
class ImportanceScores:
    """Accumulated scores of every unit of a BERT of `arch` (bigger = more important)."""

    heads: Tensor  # (L, h)
    qk: Tensor  # (L, h, head_size)
    vo: Tensor  # (L, h, head_size)
    ffn: Tensor  # (L, F)
    hidden: Tensor  # (H,)
    batches: int = 0  # calibration batches accumulated

    @classmethod
    def zeros(cls, arch: Arch) -> ImportanceScores:
        L, h, d = arch.layers, arch.heads, arch.head_size
        z = dict(dtype=torch.float64)  # sums over many batches: no float32 round-off in the ranking
        return cls(torch.zeros(L, h, **z), torch.zeros(L, h, d, **z), torch.zeros(L, h, d, **z),
                   torch.zeros(L, arch.ffn, **z), torch.zeros(arch.hidden, **z))

    def tensors(self, prefix: str = "") -> dict[str, Tensor]:
        return {f"{prefix}{u}": getattr(self, u).contiguous() for u in UNITS}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], batches: int, prefix: str = "") -> ImportanceScores:
        return cls(**{u: tensors[f"{prefix}{u}"].to(torch.float64) for u in UNITS}, batches=batches)


@dataclass
class Ordering:
    """Permutations of a checkpoint's units: entry k of each is the checkpoint's unit that becomes unit k."""

    method: str  # "taylor", "activation" or "none" (identity)
    hidden: Tensor  # (H,)
    ffn: Tensor  # (L, F)
    heads: Tensor  # (L, h): the `heads` cut; identity for the `dims` cut
    qk: Tensor  # (L, h, head_size): the `dims` cut; identity for the `heads` cut
    vo: Tensor  # (L, h, head_size)
    layer_ranking: list[int] | None = None  # checkpoint layers, most important first (depth rule 'importance')
    extra: dict = field(default_factory=dict)

    @classmethod
    def identity(cls, arch: Arch, layer_ranking: list[int] | None = None) -> Ordering:
        L, h, d = arch.layers, arch.heads, arch.head_size
        return cls("none", torch.arange(arch.hidden), torch.arange(arch.ffn).repeat(L, 1),
                   torch.arange(h).repeat(L, 1), torch.arange(d).repeat(L, h, 1), torch.arange(d).repeat(L, h, 1),
                   layer_ranking)

    def tensors(self) -> dict[str, Tensor]:
        return {name: getattr(self, name).contiguous() for name in ("hidden", "ffn", "heads", "qk", "vo")}

    @classmethod
    def from_tensors(cls, method: str, tensors: dict[str, Tensor], layer_ranking: list[int] | None) -> Ordering:
        return cls(method, *(tensors[n].long() for n in ("hidden", "ffn", "heads", "qk", "vo")),
                   layer_ranking=layer_ranking)


def _descending(scores: Tensor) -> Tensor:
    """Indices sorting the last axis from the most to the least important (ties keep the original order)."""
    return torch.sort(-scores, dim=-1, stable=True).indices


def ordering_from_scores(scores: ImportanceScores, arch: Arch, cut: str, method: str,
                         layer_ranking: list[int] | None = None) -> Ordering:
    """The permutations that put the most important units first; attention is ordered for `cut` only."""
    identity = Ordering.identity(arch)
    return Ordering(method=method, hidden=_descending(scores.hidden), ffn=_descending(scores.ffn),
                    heads=_descending(scores.heads) if cut == "heads" else identity.heads,
                    qk=_descending(scores.qk) if cut == "dims" else identity.qk,
                    vo=_descending(scores.vo) if cut == "dims" else identity.vo,
                    layer_ranking=layer_ranking)


# ------------------------------------------------------------------------------------------------ reordering
def _head_feature_index(arch: Arch, heads: Tensor, dims: Tensor) -> Tensor:
    """Head-major source features of one layer, (h * d,): new head i is the checkpoint's head ``heads[i]``, and
    its dims come in that head's order ``dims[heads[i]]`` (dims is indexed by the checkpoint's head)."""
    return (heads[:, None] * arch.head_size + dims.index_select(0, heads)).reshape(-1)


def apply_ordering(state: dict[str, Tensor], arch: Arch, ordering: Ordering) -> dict[str, Tensor]:
    """`state` (BERT names, head-major, at `arch`) with its units permuted by `ordering`: the same function.

    The KD projection is not part of `state`; use `permute_projection` for it."""
    c = ordering.hidden
    out = dict(state)

    def rows(key: str, index: Tensor) -> None:
        out[key] = out[key].index_select(0, index)

    def cols(key: str, index: Tensor) -> None:
        out[key] = out[key].index_select(1, index)

    emb = "bert.embeddings."
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        cols(f"{emb}{name}.weight", c)
    for p in ("weight", "bias"):
        rows(f"{emb}LayerNorm.{p}", c)
    for layer in range(arch.layers):
        pre = f"bert.encoder.layer.{layer}."
        # Q and K share one order per head (the q·k sum), V and the output columns another; the heads cut moves
        # whole heads (qk/vo identity), the dims cut moves dims inside each head (heads identity).
        heads = ordering.heads[layer]
        qk = _head_feature_index(arch, heads, ordering.qk[layer])
        vo = _head_feature_index(arch, heads, ordering.vo[layer])
        for proj, index in (("query", qk), ("key", qk), ("value", vo)):
            rows(f"{pre}attention.self.{proj}.weight", index)
            cols(f"{pre}attention.self.{proj}.weight", c)
            rows(f"{pre}attention.self.{proj}.bias", index)
        cols(f"{pre}attention.output.dense.weight", vo)
        rows(f"{pre}attention.output.dense.weight", c)
        rows(f"{pre}attention.output.dense.bias", c)
        n = ordering.ffn[layer]
        rows(f"{pre}intermediate.dense.weight", n)
        cols(f"{pre}intermediate.dense.weight", c)
        rows(f"{pre}intermediate.dense.bias", n)
        cols(f"{pre}output.dense.weight", n)
        rows(f"{pre}output.dense.weight", c)
        rows(f"{pre}output.dense.bias", c)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            for p in ("weight", "bias"):
                rows(f"{pre}{norm}.{p}", c)
    head = "cls.predictions.transform."
    if f"{head}dense.weight" in out:  # the transform maps hidden -> hidden; the decoder is the word embeddings
        rows(f"{head}dense.weight", c)
        cols(f"{head}dense.weight", c)
        for p in ("dense.bias", "LayerNorm.weight", "LayerNorm.bias"):
            rows(f"{head}{p}", c)
    return out


def permute_projection(weight: Tensor, ordering: Ordering) -> Tensor:
    """A KD projection (teacher hidden, checkpoint hidden) with its input columns in the ordered channel order."""
    return weight.index_select(1, ordering.hidden)


def self_distillation_projection(teacher_hidden: int, student_hidden: int, ordering: Ordering) -> Tensor:
    """The (teacher_hidden, student_hidden) projection that maps the ordered student's channel k back to the
    checkpoint's channel ``ordering.hidden[k]``: with the checkpoint as teacher, the full sub-model's projected
    hidden state then equals the teacher's exactly (a random projection would start KD from noise)."""
    weight = torch.zeros(teacher_hidden, student_hidden)
    k = torch.arange(student_hidden)
    weight[ordering.hidden[:student_hidden], k] = 1.0
    return weight


# ------------------------------------------------------------------------------------------------ scores
def accumulate_taylor(scores: ImportanceScores, model: torch.nn.Module, arch: Arch,
                      projection: torch.nn.Linear | None = None) -> None:
    """Add sum |w * dL/dw| per unit, from the gradients now in `model` (a SuperBERT at the checkpoint's `arch`, in
    the head-major ``heads`` layout) and in the KD `projection` (its input columns are hidden channels)."""
    params = dict(model.named_parameters())
    L, h, d = arch.layers, arch.heads, arch.head_size

    def wg(name: str) -> Tensor:
        p = params[name]
        if p.grad is None:
            return torch.zeros(p.shape, dtype=torch.float64)
        return (p.detach() * p.grad).abs().to(torch.float64)

    hidden = torch.zeros(arch.hidden, dtype=torch.float64)
    emb = "bert.embeddings."
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        hidden += wg(f"{emb}{name}.weight").sum(0)
    hidden += wg(f"{emb}LayerNorm.weight") + wg(f"{emb}LayerNorm.bias")
    for layer in range(L):
        pre = f"bert.encoder.layer.{layer}."
        per_feature = {}
        for proj in ("query", "key", "value"):
            w = wg(f"{pre}attention.self.{proj}.weight")  # (qkv, H)
            hidden += w.sum(0)
            per_feature[proj] = w.sum(1) + wg(f"{pre}attention.self.{proj}.bias")
        out_w = wg(f"{pre}attention.output.dense.weight")  # (H, qkv)
        hidden += out_w.sum(1) + wg(f"{pre}attention.output.dense.bias")
        qk = (per_feature["query"] + per_feature["key"]).view(h, d)
        vo = (per_feature["value"] + out_w.sum(0)).view(h, d)
        scores.qk[layer] += qk
        scores.vo[layer] += vo
        scores.heads[layer] += (qk + vo).sum(1)
        inter_w, out2_w = wg(f"{pre}intermediate.dense.weight"), wg(f"{pre}output.dense.weight")  # (F, H), (H, F)
        scores.ffn[layer] += inter_w.sum(1) + wg(f"{pre}intermediate.dense.bias") + out2_w.sum(0)
        hidden += inter_w.sum(0) + out2_w.sum(1) + wg(f"{pre}output.dense.bias")
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            hidden += wg(f"{pre}{norm}.weight") + wg(f"{pre}{norm}.bias")
    head = "cls.predictions.transform."
    if f"{head}dense.weight" in params:
        w = wg(f"{head}dense.weight")
        hidden += w.sum(0) + w.sum(1) + wg(f"{head}dense.bias") + wg(f"{head}LayerNorm.weight") \
            + wg(f"{head}LayerNorm.bias")
    if projection is not None and projection.weight.grad is not None:
        hidden += (projection.weight.detach() * projection.weight.grad).abs().to(torch.float64).sum(0)
    scores.hidden += hidden
    scores.batches += 1


@dataclass
class ActivationStats:
    """Sums of squared activations over real tokens (raw sums, so that batches add up and a run can resume)."""

    query: Tensor  # (L, h, d)
    key: Tensor  # (L, h, d)
    context: Tensor  # (L, h, d)
    ffn: Tensor  # (L, F)
    norms: Tensor  # (2L + 1, H): the embedding LayerNorm, then each layer's two LayerNorm outputs
    tokens: Tensor  # () real tokens seen
    batches: int = 0

    NAMES = ("query", "key", "context", "ffn", "norms", "tokens")

    @classmethod
    def zeros(cls, arch: Arch) -> ActivationStats:
        L, h, d = arch.layers, arch.heads, arch.head_size
        z = dict(dtype=torch.float64)
        return cls(torch.zeros(L, h, d, **z), torch.zeros(L, h, d, **z), torch.zeros(L, h, d, **z),
                   torch.zeros(L, arch.ffn, **z), torch.zeros(2 * L + 1, arch.hidden, **z), torch.zeros((), **z))

    def tensors(self, prefix: str = "") -> dict[str, Tensor]:
        return {f"{prefix}{n}": getattr(self, n).contiguous() for n in self.NAMES}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], batches: int, prefix: str = "") -> ActivationStats:
        return cls(**{n: tensors[f"{prefix}{n}"].to(torch.float64) for n in cls.NAMES}, batches=batches)

    def recorder(self, attention_mask: Tensor) -> ActivationRecorder:
        return ActivationRecorder(self, attention_mask)

    def scores(self) -> ImportanceScores:
        """RMS over tokens per unit (Minitron's activation importance)."""
        n = self.tokens.clamp(min=1.0)
        q, k, ctx = self.query / n, self.key / n, self.context / n  # mean squares, (L, h, d)
        return ImportanceScores(heads=ctx.sum(-1).sqrt(), qk=(q * k).sqrt(), vo=ctx.sqrt(),
                                ffn=(self.ffn / n).sqrt(), hidden=(self.norms / n).sqrt().sum(0),
                                batches=self.batches)


class ActivationRecorder:
    """The probe a SuperBERT's forward calls (``model(..., probe=recorder)``): adds one batch to `stats`."""

    def __init__(self, stats: ActivationStats, attention_mask: Tensor):
        self.stats = stats
        self.real = attention_mask.to(torch.float64)  # (B, T)
        stats.tokens += self.real.sum()
        stats.batches += 1

    def __call__(self, name: str, layer: int, t: Tensor) -> None:
        t2 = t.detach().to(torch.float64) ** 2
        s = self.stats
        if name in ("query", "key", "context"):  # (B, h, T, d)
            getattr(s, name)[layer] += (t2 * self.real[:, None, :, None]).sum((0, 2))
            return
        per_channel = (t2 * self.real[..., None]).sum((0, 1))  # (B, T, X) -> (X,)
        if name == "ffn":
            s.ffn[layer] += per_channel
        elif name == "embeddings":
            s.norms[0] += per_channel
        elif name == "attention_norm":
            s.norms[1 + 2 * layer] += per_channel
        elif name == "output_norm":
            s.norms[2 + 2 * layer] += per_channel


def rank_layers(loss_without: Callable[[list[int]], float], total: int) -> tuple[list[int], list[dict]]:
    """Greedy block pruning: drop, one at a time, the layer whose removal raises the loss least.

    `loss_without(kept)` is the calibration loss of the model running only the stored layers `kept` (ascending).
    Returns the ranking (most important first: the reverse of the removal order, the last survivor first) and
    the trace of every removal with its loss."""
    kept = list(range(total))
    removed, trace = [], []
    while len(kept) > 1:
        trials = [(loss_without([k for k in kept if k != layer]), layer) for layer in kept]
        loss, layer = min(trials)
        kept.remove(layer)
        removed.append(layer)
        trace.append({"removed": layer, "loss": loss, "kept": list(kept)})
    return kept + removed[::-1], trace
