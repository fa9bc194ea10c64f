"""Extraction: copy a sub-model's weights out of a SuperBERT into a standalone `AutoTinyBert*` model.

Both sides use `transformers`' BERT parameter names, so extraction is a per-tensor slice: the first rows and
columns of every matrix, the first entries of every vector, of the layers the supernet's depth rule picks for the
arch (`SuperBertConfig.layer_ids`, the same the supernet's forward runs). In a ``dims``-cut supernet the Q/K/V
output features (and the attention-output input features) are stored dim-major; they are permuted to the standard
head-major layout here, once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import Tensor

from .arch import Arch
from .layers import Layout
from .io import check_output, copy_tokenizer_files, staged_dir
from .modeling import (
    AutoTinyBertConfig,
    AutoTinyBertForMaskedLM,
    AutoTinyBertForQuestionAnswering,
    AutoTinyBertForSequenceClassification,
    AutoTinyBertModel,
    AutoTinyBertPreTrainedModel,
)
from .supernet import SuperBertForMaskedLM

HEADS = {
    "mlm": AutoTinyBertForMaskedLM,
    "base": AutoTinyBertModel,
    "sequence-classification": AutoTinyBertForSequenceClassification,
    "question-answering": AutoTinyBertForQuestionAnswering,
}
Head = Literal["mlm", "base", "sequence-classification", "question-answering"]


def _dim_major_to_head_major(t: Tensor, heads: int, dim: int) -> Tensor:
    """Reorder features along `dim` from (d, heads) order to (heads, d) order."""
    shape = list(t.shape)
    d = shape[dim] // heads
    t = t.reshape(shape[:dim] + [d, heads] + shape[dim + 1:])
    return t.transpose(dim, dim + 1).reshape(shape)


def _slice_to(src: Tensor, shape: torch.Size) -> Tensor:
    return src[tuple(slice(0, n) for n in shape)]


_LAYER_KEY = re.compile(r"^(.*\bencoder\.layer\.)(\d+)(\..*)$")


def sub_state_dict(source: dict[str, Tensor], layout: Layout, arch: Arch,
                   target_keys: dict[str, torch.Size], layer_ids: Sequence[int] | None = None) -> dict[str, Tensor]:
    """Supernet tensors (weights, or their gradients) for `arch`, cut to the shapes in `target_keys`.

    `source` uses the supernet's names ('bert.'-prefixed); `layout` is the supernet's Q/K/V feature layout;
    `layer_ids[i]` is the stored supernet layer that becomes layer i (the depth rule's pick; default the first).
    """
    dim_major = layout == "dim_major"
    out = {}
    for key, shape in target_keys.items():
        src_key = key
        found = _LAYER_KEY.match(key) if layer_ids is not None else None
        if found is not None:
            src_key = f"{found[1]}{layer_ids[int(found[2])]}{found[3]}"
        if src_key not in source:
            continue  # task heads and the pooler are not in the supernet; they keep their fresh init
        t = _slice_to(source[src_key], shape)
        if dim_major:
            if key.endswith(("attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight",
                             "attention.self.query.bias", "attention.self.key.bias", "attention.self.value.bias")):
                t = _dim_major_to_head_major(t, arch.heads, 0)
            elif key.endswith("attention.output.dense.weight"):
                t = _dim_major_to_head_major(t, arch.heads, 1)
        out[key] = t.clone()
    return out


def extract(
    supernet: SuperBertForMaskedLM,
    arch: Arch | str,
    head: Head = "mlm",
    **config_kwargs,
) -> AutoTinyBertPreTrainedModel:
    """Return the standalone model of `arch` with the supernet's sliced weights copied in.

    `head` picks the class: ``mlm`` (default, keeps the MLM head), ``base``, ``sequence-classification`` or
    ``question-answering`` (new heads and the pooler start from BERT's initialisation). Extra keyword arguments
    go to `AutoTinyBertConfig` (e.g. ``num_labels=3``).
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {sorted(HEADS)}")
    arch = supernet.check_arch(arch)
    sc = supernet.config
    config = AutoTinyBertConfig.from_arch(
        arch,
        vocab_size=sc.vocab_size,
        max_position_embeddings=sc.max_position_embeddings,
        type_vocab_size=sc.type_vocab_size,
        layer_norm_eps=sc.layer_norm_eps,
        hidden_dropout_prob=sc.hidden_dropout_prob,
        attention_probs_dropout_prob=sc.attention_probs_dropout_prob,
        initializer_range=sc.initializer_range,
        pad_token_id=sc.pad_token_id,
        **config_kwargs,
    )
    model = HEADS[head](config)
    # The base model's keys lack the "bert." prefix that the supernet's (and every head model's) keys carry.
    super_key = (lambda key: f"bert.{key}") if head == "base" else (lambda key: key)
    own = model.state_dict()
    weights = sub_state_dict(supernet.state_dict(), sc.layout, arch, {super_key(k): t.shape for k, t in own.items()},
                             sc.layer_ids(arch.layers))
    with torch.no_grad():
        for key, tensor in own.items():
            if super_key(key) in weights:
                tensor.copy_(weights[super_key(key)])
    model.eval()
    return model


def save_extracted(model: AutoTinyBertPreTrainedModel, out: str | Path, tokenizer_dir: str | Path | None = None,
                   overwrite: bool = False, card=None) -> Path:
    """`save_pretrained` into a staging folder, add tokenizer files and the model card (README.md), then move it
    into place. An `out` that is, holds or sits inside `tokenizer_dir` (the supernet folder, typically) is refused
    before anything is written. `card`: a `modelcard.CardInfo` (default: what the model itself tells)."""
    from .modelcard import CardInfo, write_card

    check_output(out, [("tokenizer_dir", tokenizer_dir)])
    with staged_dir(out, overwrite=overwrite) as stage:
        model.save_pretrained(stage)
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, stage)
        write_card(stage, card or CardInfo.of_model(model, "extracted"), name=Path(out).name)
    return Path(out)


def to_plain_bert(model: AutoTinyBertPreTrainedModel):
    """The same weights in the stock `transformers` BERT class (needs qkv == hidden)."""
    from transformers import (BertConfig, BertForMaskedLM, BertForQuestionAnswering,
                              BertForSequenceClassification, BertModel)

    cfg = model.config
    if cfg.qkv_size != cfg.hidden_size:
        raise ValueError(f"a plain BERT needs qkv == hidden; arch {cfg.arch} has qkv {cfg.qkv_size} "
                         f"!= hidden {cfg.hidden_size}. Keep the autotinybert folder for this arch.")
    classes = {AutoTinyBertModel: BertModel, AutoTinyBertForMaskedLM: BertForMaskedLM,
               AutoTinyBertForSequenceClassification: BertForSequenceClassification,
               AutoTinyBertForQuestionAnswering: BertForQuestionAnswering}
    bert_cls = classes[type(model)]
    data = cfg.to_dict()
    for key in ("model_type", "qkv_size", "architectures", "transformers_version", "auto_map"):
        data.pop(key, None)
    bert = bert_cls(BertConfig(**data))
    missing, unexpected = bert.load_state_dict(model.state_dict(), strict=False)
    # Only the tied decoder may be absent from one side; anything else is a naming bug.
    leftover = [k for k in list(missing) + list(unexpected) if not k.startswith("cls.predictions.decoder")]
    if leftover:
        raise RuntimeError(f"plain BERT export: parameter names differ: {leftover[:8]}")
    bert.tie_weights()
    return bert.eval()
