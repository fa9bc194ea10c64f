"""Standalone AutoTinyBERT models as a Hugging Face model family (``model_type = "autotinybert"``).

BERT with one extra config field, ``qkv_size`` (total Q/K/V width; head size = qkv_size / heads), so
``L-dm-df-h-dqkv`` architectures with dqkv != dm load without patching `transformers`. Importing `autotinybert`
registers the classes with AutoConfig / AutoModel / AutoModelFor*, so ``AutoModel.from_pretrained(dir)`` works.
The layers are the same elastic modules the supernet uses (`layers.py`), run at full size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
)

from .arch import Arch
from .initialization import init_bert_module
from .layers import Embeddings, Encoder, PredictionHeadTransform, additive_mask, mlm_logits


class AutoTinyBertConfig(PreTrainedConfig):
    """BERT's configuration plus ``qkv_size`` (defaults to ``hidden_size``, i.e. plain BERT)."""

    model_type = "autotinybert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    qkv_size: int | None = None
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    classifier_dropout: float | int | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        if self.qkv_size is None:
            self.qkv_size = self.hidden_size
        if self.hidden_act != "gelu":
            raise ValueError(f"AutoTinyBert supports hidden_act='gelu' only, got {self.hidden_act!r}")
        super().__post_init__(**kwargs)
        self.arch  # validates the five sizes with Arch's error messages

    @property
    def arch(self) -> Arch:
        return Arch(self.num_hidden_layers, self.hidden_size, self.intermediate_size,
                    self.num_attention_heads, self.qkv_size)

    @classmethod
    def from_arch(cls, arch: Arch | str, **kwargs) -> AutoTinyBertConfig:
        arch = Arch.parse(arch)
        return cls(num_hidden_layers=arch.layers, hidden_size=arch.hidden, intermediate_size=arch.ffn,
                   num_attention_heads=arch.heads, qkv_size=arch.qkv, **kwargs)


class AutoTinyBertPreTrainedModel(PreTrainedModel):
    config_class = AutoTinyBertConfig
    config: AutoTinyBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader; a truncated or foreign weights file is a `UserError` naming the folder."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except Exception as err:
            if type(err).__name__ != "SafetensorError":
                raise
            from .errors import UserError

            raise UserError(f"the weights in {pretrained_model_name_or_path} cannot be read ({err}): the "
                            "model.safetensors file is truncated or not a safetensors file; copy or write the "
                            "folder again") from None

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation (the SuperBERT's rule); tensors `from_pretrained` loaded are left as they are."""
        init_bert_module(module, self.config.initializer_range, skip_loaded=True)
        if isinstance(module, LMPredictionHead) and not getattr(module.bias, "_is_hf_initialized", False):
            module.bias.zero_()


class Pooler(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))  # (B, hidden): the [CLS] position


class AutoTinyBertModel(AutoTinyBertPreTrainedModel):
    def __init__(self, config: AutoTinyBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        a = config.arch
        self.embeddings = Embeddings(config.vocab_size, a.hidden, config.max_position_embeddings,
                                     config.type_vocab_size, config.layer_norm_eps, config.hidden_dropout_prob,
                                     config.pad_token_id)
        self.encoder = Encoder(a.layers, a.hidden, a.ffn, a.qkv, config.layer_norm_eps,
                               config.hidden_dropout_prob, config.attention_probs_dropout_prob)
        self.pooler = Pooler(a.hidden) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        if input_ids is None:
            raise ValueError("AutoTinyBertModel needs input_ids (inputs_embeds is not supported)")
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        output_hidden_states = bool(output_hidden_states if output_hidden_states is not None
                                    else self.config.output_hidden_states)
        arch = self.config.arch
        x = self.embeddings(input_ids, token_type_ids, position_ids, arch.hidden)
        enc = self.encoder(x, additive_mask(attention_mask, x.dtype), arch, "head_major", output_hidden_states,
                           "all" if output_attentions else "none")
        pooled = self.pooler(enc.last_hidden_state) if self.pooler is not None else None
        out = BaseModelOutputWithPooling(last_hidden_state=enc.last_hidden_state, pooler_output=pooled,
                                         hidden_states=enc.hidden_states, attentions=enc.attentions)
        return out if return_dict is not False else out.to_tuple()


class LMPredictionHead(nn.Module):
    def __init__(self, config: AutoTinyBertConfig):
        super().__init__()
        self.transform = PredictionHeadTransform(config.hidden_size, config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=True)  # weight tied to embeddings
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: Tensor) -> Tensor:
        return mlm_logits(self.transform, self.decoder.weight, self.bias, hidden_states, hidden_states.shape[-1])


class OnlyMLMHead(nn.Module):
    def __init__(self, config: AutoTinyBertConfig):
        super().__init__()
        self.predictions = LMPredictionHead(config)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.predictions(hidden_states)


def _outputs(base_out: BaseModelOutputWithPooling) -> dict:
    return {"hidden_states": base_out.hidden_states, "attentions": base_out.attentions}


class AutoTinyBertForMaskedLM(AutoTinyBertPreTrainedModel):
    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: AutoTinyBertConfig):
        super().__init__(config)
        self.bert = AutoTinyBertModel(config, add_pooling_layer=False)
        self.cls = OnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        """labels: (B, T) with -100 for positions that carry no loss."""
        base = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions,
                         output_hidden_states, return_dict=True)
        logits = self.cls(base.last_hidden_state)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
        out = MaskedLMOutput(loss=loss, logits=logits, **_outputs(base))
        return out if return_dict is not False else out.to_tuple()


class AutoTinyBertForSequenceClassification(AutoTinyBertPreTrainedModel):
    """Pooled [CLS] -> dropout -> linear; regression when ``num_labels == 1`` (STS-B), as in BERT."""

    def __init__(self, config: AutoTinyBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = AutoTinyBertModel(config)
        drop = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(drop)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        base = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions,
                         output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(base.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            problem = self.config.problem_type
            if problem is None:
                problem = "regression" if self.num_labels == 1 else (
                    "single_label_classification" if labels.dtype in (torch.long, torch.int) else
                    "multi_label_classification")
            if problem == "regression":
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1)) if self.num_labels == 1 \
                    else F.mse_loss(logits, labels.to(logits.dtype))
            elif problem == "single_label_classification":
                loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        out = SequenceClassifierOutput(loss=loss, logits=logits, **_outputs(base))
        return out if return_dict is not False else out.to_tuple()


class AutoTinyBertForQuestionAnswering(AutoTinyBertPreTrainedModel):
    """Span extraction (SQuAD): a linear layer gives start and end logits per token."""

    def __init__(self, config: AutoTinyBertConfig):
        super().__init__(config)
        self.num_labels = 2
        self.bert = AutoTinyBertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                start_positions=None, end_positions=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        base = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions,
                         output_hidden_states, return_dict=True)
        start_logits, end_logits = self.qa_outputs(base.last_hidden_state).unbind(dim=-1)  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the input (answers cut off by the window) are ignored, as in BERT.
            T = start_logits.shape[1]
            start = start_positions.view(-1).clamp(0, T)
            end = end_positions.view(-1).clamp(0, T)
            loss = (F.cross_entropy(start_logits, start, ignore_index=T)
                    + F.cross_entropy(end_logits, end, ignore_index=T)) / 2
        out = QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits.contiguous(),
                                           end_logits=end_logits.contiguous(), **_outputs(base))
        return out if return_dict is not False else out.to_tuple()


class SupernetFolderConfig(PreTrainedConfig):
    """What transformers sees of a supernet folder's ``config.json`` (``model_type: autotinybert-supernet``).

    Nothing builds a model from it -- `SuperBertForMaskedLM.from_pretrained` reads that file itself -- but
    ``AutoTokenizer.from_pretrained(supernet_dir)`` reads the config to find the tokenizer class and warns about
    an unknown model type unless the type is registered.
    """

    model_type = "autotinybert-supernet"


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModel*`` resolve ``model_type = "autotinybert"`` (idempotent)."""
    for model_type, config_cls in (("autotinybert", AutoTinyBertConfig),
                                   ("autotinybert-supernet", SupernetFolderConfig)):
        try:
            AutoConfig.register(model_type, config_cls)
        except ValueError:
            pass  # already registered (e.g. the module was imported twice)
    for auto_cls, model_cls in (
        (AutoModel, AutoTinyBertModel),
        (AutoModelForMaskedLM, AutoTinyBertForMaskedLM),
        (AutoModelForSequenceClassification, AutoTinyBertForSequenceClassification),
        (AutoModelForQuestionAnswering, AutoTinyBertForQuestionAnswering),
    ):
        try:
            auto_cls.register(AutoTinyBertConfig, model_cls)
        except ValueError:
            pass


register_auto_classes()
