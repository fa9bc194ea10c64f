"""Training objectives on one sub-model: masked-LM cross-entropy, or task-agnostic distillation (paper §4.1).

KD is TinyBERT's general distillation with the last layer only, as in the paper and the official AutoTinyBERT
code: MSE between the student's and the teacher's last-layer attention *scores* (``q.k / sqrt(d)`` before the
softmax; the student and the teacher have the same head count), plus MSE between the student's last hidden state,
through a learned projection to the teacher's width, and the teacher's. Positions involving padding contribute
nothing: the official code zeroes them (``torch.where(att <= -1e2, 0, att)`` on mask-added scores); here they are
left out of the mean by the attention mask, which is exact (a real score below -100 is not zeroed). Two other
attention terms are kept as options (`kd_attention`): ``probs``, MSE of the attention probabilities (what this
package did before; on probabilities the term is ~350x smaller than the hidden term and barely acts), and ``kl``,
MiniLM's KL(teacher || student) between the attention distributions.

`StudentModule` wraps the trainable parts (a SuperBERT or a standalone model, plus the KD projection) in one
`nn.Module`, so the optimizer and the gradient all-reduce see every trainable parameter; `forward` returns an
`ObjectiveOutput`: the loss of one (batch, arch) and its unweighted terms (logged separately in metrics.jsonl).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..arch import Arch
from ..errors import UserError
from ..initialization import init_bert_module
from ..layers import additive_mask, sliced_linear
from ..supernet import SuperBertForMaskedLM

KDAttention = Literal["scores", "probs", "kl"]
KD_ATTENTION_MODES: tuple[str, ...] = ("scores", "probs", "kl")
_MASKED = -1e4  # fill of padded keys before a softmax: exp underflows to exactly 0, log stays finite (KL)


class TeacherError(UserError):
    """A KD teacher that cannot be loaded or does not match the student's space or tokenizer."""


@dataclass
class TeacherOutput:
    scores: Tensor  # (B, heads, T, T) last-layer attention scores q.k / sqrt(d), before the padding mask
    hidden: Tensor  # (B, T, teacher_hidden) last hidden state


class Teacher:
    """A frozen Hugging Face encoder: eval mode, no gradients, one forward per batch.

    The last layer's attention scores are recomputed from its input (the second-to-last hidden state) with the
    layer's own query/key projections: Hugging Face models return attention *probabilities* only, and hooks are
    not needed for two matmuls. `check_scores` (run in the tests) verifies softmax(scores + mask) against the
    model's own eager probabilities."""

    def __init__(self, name_or_path: str | Path, device: torch.device | str = "cpu"):
        from transformers import AutoConfig, AutoModel

        import autotinybert  # noqa: F401  (registers AutoTinyBert with the Auto classes)

        try:
            config = AutoConfig.from_pretrained(str(name_or_path))
            self.model = AutoModel.from_pretrained(str(name_or_path))
        except (OSError, ValueError) as err:
            raise TeacherError(f"cannot load KD teacher {name_or_path!s} with transformers.AutoModel: {err}") from None
        self.path = str(name_or_path)
        self.config = config
        self.heads = int(config.num_attention_heads)
        self.hidden = int(config.hidden_size)
        self.vocab_size = int(config.vocab_size)
        self.last_attention = self._last_attention()
        self.model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _last_attention(self) -> nn.Module:
        """The last layer's self-attention module (BERT, ELECTRA, RoBERTa, MiniLM: encoder.layer[-1].attention.self)."""
        position = getattr(self.config, "position_embedding_type", "absolute")
        try:
            attention = self.model.encoder.layer[-1].attention.self
            attention.query, attention.key  # noqa: B018  (both must exist)
        except (AttributeError, IndexError, TypeError):
            raise TeacherError(f"KD teacher {self.path} is not a BERT-like encoder (no encoder.layer[-1].attention."
                               "self.query/key): its attention scores cannot be read") from None
        if position not in (None, "absolute"):
            raise TeacherError(f"KD teacher {self.path} uses {position!r} position embeddings inside attention; "
                               "only absolute position embeddings are supported")
        if self.hidden % self.heads:
            raise TeacherError(f"KD teacher {self.path}: hidden size {self.hidden} is not divisible by its "
                               f"{self.heads} heads")
        return attention

    @torch.no_grad()
    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> TeacherOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=torch.zeros_like(input_ids), output_hidden_states=True, return_dict=True)
        x = out.hidden_states[-2]  # (B, T, H): the last layer's input
        B, T, _ = x.shape
        d = self.hidden // self.heads
        q = self.last_attention.query(x).view(B, T, self.heads, d).transpose(1, 2)  # (B, h, T, d)
        k = self.last_attention.key(x).view(B, T, self.heads, d).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * d ** -0.5  # (B, h, T, T)
        return TeacherOutput(scores=scores.float(), hidden=out.last_hidden_state.float())

    @torch.no_grad()
    def check_scores(self, input_ids: Tensor, attention_mask: Tensor) -> float:
        """Largest |softmax(scores + mask) - the model's own eager attention probabilities| (a self-test)."""
        attn = self.model.config._attn_implementation
        self.model.set_attn_implementation("eager")
        try:
            probs = self.model(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=torch.zeros_like(input_ids), output_attentions=True).attentions[-1]
        finally:
            self.model.set_attn_implementation(attn)
        ours = attention_probs(self(input_ids, attention_mask).scores, attention_mask)
        return float((ours - probs.float()).abs().max())

    def check_student(self, student_heads: int, attention_cut: str | None, tokenizer) -> None:
        """Refuse a student that cannot be distilled from this teacher (before any training)."""
        if attention_cut is not None and attention_cut != "dims":
            raise TeacherError(f"kd needs a 'dims'-cut space (every sub-model keeps the teacher's {self.heads} heads); "
                               f"this space uses the '{attention_cut}' cut. Use e.g. space=cpu-kd or space=kd")
        if student_heads != self.heads:
            raise TeacherError(f"teacher {self.path} has {self.heads} attention heads but the student has "
                               f"{student_heads}; attention distillation needs the same head count")
        if self.vocab_size != len(tokenizer):
            raise TeacherError(f"teacher {self.path} has vocab_size {self.vocab_size} but the tokenizer has "
                               f"{len(tokenizer)} tokens; use the teacher's own tokenizer (tokenizer={self.path})")
        teacher_tok = Path(self.path)
        if (teacher_tok / "vocab.txt").is_file() or (teacher_tok / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            theirs = AutoTokenizer.from_pretrained(str(teacher_tok)).get_vocab()
            if theirs != tokenizer.get_vocab():
                raise TeacherError(f"teacher {self.path} uses a different vocabulary from the training tokenizer; "
                                   f"use the teacher's own tokenizer (tokenizer={self.path})")


def attention_probs(scores: Tensor, attention_mask: Tensor) -> Tensor:
    """softmax over the real keys of raw scores (B, h, T, T); padded keys get probability 0."""
    keys = attention_mask[:, None, None, :].bool()  # (B, 1, 1, T)
    return scores.float().masked_fill(~keys, _MASKED).softmax(dim=-1)


@dataclass
class KDTerms:
    """The two KD terms, unweighted (scalars)."""

    attention: Tensor
    hidden: Tensor


def kd_terms(student_scores: Tensor, student_hidden: Tensor, teacher: TeacherOutput, attention_mask: Tensor,
             attention: KDAttention = "scores") -> KDTerms:
    """The attention term (by `attention`) and the hidden-state MSE, over real tokens only.

    student_scores / teacher.scores: (B, h, T, T) raw scores before the padding mask; student_hidden (already
    projected) / teacher.hidden: (B, T, Ht); attention_mask: (B, T), 1 for real tokens.

    * ``scores``: mean over heads and real (query, key) pairs of (s - t)^2 (TinyBERT / the paper);
    * ``probs``: the same on softmax probabilities;
    * ``kl``: mean over heads and real queries of KL(teacher || student) over the real keys (MiniLM).
    The hidden term: mean over real tokens of the squared error averaged over the teacher's width.
    """
    real = attention_mask.to(torch.float32)  # (B, T)
    heads = student_scores.shape[1]
    if attention == "kl":
        keys = attention_mask[:, None, None, :].bool()
        log_s = student_scores.float().masked_fill(~keys, _MASKED).log_softmax(dim=-1)
        log_t = teacher.scores.masked_fill(~keys, _MASKED).log_softmax(dim=-1)
        kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # (B, h, T): padded keys add 0 * finite
        attn = (kl * real[:, None, :]).sum() / (real.sum() * heads)
    else:
        pair = real[:, None, :, None] * real[:, None, None, :]  # (B, 1, T, T): real query and real key
        if attention == "probs":
            s, t = attention_probs(student_scores, attention_mask), attention_probs(teacher.scores, attention_mask)
        elif attention == "scores":
            s, t = student_scores.float(), teacher.scores
        else:
            raise ValueError(f"kd attention term must be one of {KD_ATTENTION_MODES}, got {attention!r}")
        attn = ((s - t) ** 2 * pair).sum() / (pair.sum() * heads)
    hid = (((student_hidden.float() - teacher.hidden) ** 2).mean(-1) * real).sum() / real.sum()
    return KDTerms(attention=attn, hidden=hid)


def kd_loss(student_scores: Tensor, student_hidden: Tensor, teacher: TeacherOutput, attention_mask: Tensor,
            attention_weight: float = 1.0, hidden_weight: float = 1.0, attention: KDAttention = "scores") -> Tensor:
    """attention_weight x attention term + hidden_weight x hidden term (see `kd_terms`)."""
    terms = kd_terms(student_scores, student_hidden, teacher, attention_mask, attention)
    return attention_weight * terms.attention + hidden_weight * terms.hidden


@dataclass
class ObjectiveOutput:
    """What `StudentModule.forward` returns: the loss to minimise and its parts, unweighted (empty for MLM)."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)  # kd: {"kd_attention": ..., "kd_hidden": ...}


class StudentModule(nn.Module):
    """The trainable model (+ the KD projection); `forward` returns the `ObjectiveOutput` of one sub-model."""

    def __init__(self, model: nn.Module, objective: str, teacher_hidden: int | None = None,
                 kd_attention_weight: float = 1.0, kd_hidden_weight: float = 1.0,
                 kd_attention: KDAttention = "scores"):
        super().__init__()
        self.model = model
        self.objective = objective
        self.kd_attention_weight, self.kd_hidden_weight = kd_attention_weight, kd_hidden_weight
        self.kd_attention = kd_attention
        self.is_supernet = isinstance(model, SuperBertForMaskedLM)
        # Learned projection student hidden -> teacher hidden; a sub-model of width d uses the first d columns.
        self.projection = nn.Linear(self.max_hidden, teacher_hidden) if objective == "kd" else None
        if self.projection is not None:
            init_bert_module(self.projection, std=0.02)

    @property
    def max_hidden(self) -> int:
        return self.model.config.max_arch.hidden if self.is_supernet else self.model.config.hidden_size

    def encode(self, input_ids: Tensor, attention_mask: Tensor, arch: Arch,
               need_attentions: bool) -> tuple[Tensor, Tensor | None]:
        """(last hidden (B, T, d), last-layer raw attention scores (B, h, T, T) before the mask, or None)."""
        if self.is_supernet:
            out = self.model(input_ids, attention_mask, arch=arch, output_attentions=need_attentions)
            return out.last_hidden_state, out.attention_scores
        bert = self.model.bert
        x = bert.embeddings(input_ids, None, None, arch.hidden)
        enc = bert.encoder(x, additive_mask(attention_mask, x.dtype), arch, "head_major", False,
                           "last" if need_attentions else "none")
        return enc.last_hidden_state, (enc.attention_scores[-1] if need_attentions else None)

    def project(self, hidden: Tensor) -> Tensor:
        # (teacher hidden, max hidden): a sub-model of width d uses the first d columns
        return sliced_linear(hidden, self.projection, self.projection.out_features, hidden.shape[-1])

    def load_projection(self, path: str | Path) -> None:
        """Start the projection from a `kd_projection.safetensors` (a supernet's, of width >= this model's: a
        sub-model of width d uses its first d columns, as during supernet training)."""
        from safetensors.torch import load_file

        if self.projection is None:
            raise UserError("a KD projection can only be loaded for objective 'kd'")
        state = {k.removeprefix("projection."): v for k, v in load_file(str(path)).items()}
        weight, bias = state.get("weight"), state.get("bias")
        out_f, in_f = self.projection.weight.shape
        if weight is None or bias is None or weight.shape[0] != out_f or weight.shape[1] < in_f:
            raise UserError(f"KD projection {path} has shape {None if weight is None else tuple(weight.shape)}; this "
                            f"model needs ({out_f}, >= {in_f}) (teacher width, student width): a projection of "
                            "another teacher or a narrower model")
        with torch.no_grad():
            self.projection.weight.copy_(weight[:, :in_f])
            self.projection.bias.copy_(bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *, arch: Arch, labels: Tensor | None = None,
                teacher: TeacherOutput | None = None) -> ObjectiveOutput:
        if self.objective == "mlm":
            if self.is_supernet:
                return ObjectiveOutput(self.model(input_ids, attention_mask, arch=arch, labels=labels).loss)
            hidden, _ = self.encode(input_ids, attention_mask, arch, False)
            selected = labels != -100
            logits = self.model.cls(hidden[selected])  # (N, V): masked positions only
            return ObjectiveOutput(F.cross_entropy(logits, labels[selected]))
        hidden, scores = self.encode(input_ids, attention_mask, arch, True)
        terms = kd_terms(scores, self.project(hidden), teacher, attention_mask, self.kd_attention)
        loss = self.kd_attention_weight * terms.attention + self.kd_hidden_weight * terms.hidden
        return ObjectiveOutput(loss, {"kd_attention": terms.attention, "kd_hidden": terms.hidden})


def describe_teacher(teacher: Teacher | None) -> dict[str, Any] | None:
    if teacher is None:
        return None
    return {"path": teacher.path, "heads": teacher.heads, "hidden": teacher.hidden, "vocab_size": teacher.vocab_size}
