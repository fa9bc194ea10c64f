"""Training objectives on one sub-model: masked-LM cross-entropy, or task-agnostic distillation (paper §4.1).

`StudentModule` wraps the trainable parts (a SuperBERT or a standalone model, plus the KD projection) in one
`nn.Module`, so DDP sees every trainable parameter and `forward` returns the loss of one (batch, arch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..arch import Arch
from ..errors import UserError
from ..initialization import init_bert_module
from ..layers import additive_mask
from ..supernet import SuperBertForMaskedLM


class TeacherError(UserError):
    """A KD teacher that cannot be loaded or does not match the student's space or tokenizer."""


@dataclass
class TeacherOutput:
    attentions: Tensor  # (B, heads, T, T) last-layer attention probabilities
    hidden: Tensor  # (B, T, teacher_hidden) last hidden state


class Teacher:
    """A frozen Hugging Face encoder: eval mode, no gradients, one forward per batch."""

    def __init__(self, name_or_path: str | Path, device: torch.device | str = "cpu"):
        from transformers import AutoConfig, AutoModel

        import autotinybert  # noqa: F401  (registers AutoTinyBert with the Auto classes)

        try:
            config = AutoConfig.from_pretrained(str(name_or_path))
            self.model = AutoModel.from_pretrained(str(name_or_path), attn_implementation="eager")
        except (OSError, ValueError) as err:
            raise TeacherError(f"cannot load KD teacher {name_or_path!s} with transformers.AutoModel: {err}") from None
        self.path = str(name_or_path)
        self.config = config
        self.heads = int(config.num_attention_heads)
        self.hidden = int(config.hidden_size)
        self.vocab_size = int(config.vocab_size)
        self.model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> TeacherOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=torch.zeros_like(input_ids), output_attentions=True, return_dict=True)
        return TeacherOutput(attentions=out.attentions[-1].float(), hidden=out.last_hidden_state.float())

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


def kd_loss(student_attn: Tensor, student_hidden: Tensor, teacher: TeacherOutput, attention_mask: Tensor,
            attention_weight: float = 1.0, hidden_weight: float = 1.0) -> Tensor:
    """MSE of last-layer attention probabilities + MSE of projected last hidden states, over real tokens only.

    student_attn / teacher.attentions: (B, h, T, T); student_hidden (already projected) / teacher.hidden: (B, T, Ht);
    attention_mask: (B, T) with 1 for real tokens.
    """
    real = attention_mask.to(student_hidden.dtype)  # (B, T)
    pair = real[:, None, :, None] * real[:, None, None, :]  # (B, 1, T, T): real query and key
    heads = student_attn.shape[1]
    attn = ((student_attn.float() - teacher.attentions) ** 2 * pair).sum() / (pair.sum() * heads)
    hid = (((student_hidden.float() - teacher.hidden) ** 2).mean(-1) * real).sum() / real.sum()
    return attention_weight * attn + hidden_weight * hid


class StudentModule(nn.Module):
    """The trainable model (+ the KD projection); `forward` returns the scalar loss of one sub-model."""

    def __init__(self, model: nn.Module, objective: str, teacher_hidden: int | None = None,
                 kd_attention_weight: float = 1.0, kd_hidden_weight: float = 1.0):
        super().__init__()
        self.model = model
        self.objective = objective
        self.kd_attention_weight, self.kd_hidden_weight = kd_attention_weight, kd_hidden_weight
        self.is_supernet = isinstance(model, SuperBertForMaskedLM)
        # Learned projection student hidden -> teacher hidden; a sub-model of width d uses the first d columns.
        self.projection = nn.Linear(self.max_hidden, teacher_hidden) if objective == "kd" else None
        if self.projection is not None:
            init_bert_module(self.projection, std=0.02)

    @property
    def max_hidden(self) -> int:
        return self.model.config.max_arch.hidden if self.is_supernet else self.model.config.hidden_size

    def encode(self, input_ids: Tensor, attention_mask: Tensor, arch: Arch, need_attentions: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(last hidden (B, T, d), last attention probs or None, decoder weight view or None)."""
        if self.is_supernet:
            out = self.model(input_ids, attention_mask, arch=arch, output_attentions=need_attentions)
            return out.last_hidden_state, out.attentions, None
        bert = self.model.bert
        x = bert.embeddings(input_ids, None, None, arch.hidden)
        enc = bert.encoder(x, additive_mask(attention_mask, x.dtype), arch, "head_major", False,
                           "last" if need_attentions else "none")
        return enc.last_hidden_state, (enc.attentions[-1] if need_attentions else None), None

    def project(self, hidden: Tensor) -> Tensor:
        d = hidden.shape[-1]
        weight = self.projection.weight if d == self.projection.in_features else self.projection.weight[:, :d]
        return F.linear(hidden, weight, self.projection.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *, arch: Arch, labels: Tensor | None = None,
                teacher: TeacherOutput | None = None) -> Tensor:
        if self.objective == "mlm":
            if self.is_supernet:
                return self.model(input_ids, attention_mask, arch=arch, labels=labels).loss
            hidden, _, _ = self.encode(input_ids, attention_mask, arch, False)
            selected = labels != -100
            logits = self.model.cls(hidden[selected])  # (N, V): masked positions only
            return F.cross_entropy(logits, labels[selected])
        hidden, attentions, _ = self.encode(input_ids, attention_mask, arch, True)
        return kd_loss(attentions, self.project(hidden), teacher, attention_mask,
                       self.kd_attention_weight, self.kd_hidden_weight)


def describe_teacher(teacher: Teacher | None) -> dict[str, Any] | None:
    if teacher is None:
        return None
    return {"path": teacher.path, "heads": teacher.heads, "hidden": teacher.hidden, "vocab_size": teacher.vocab_size}
