"""The elastic SuperBERT (the paper's SuperPLM): one BERT at the space's max arch that runs any sub-arch.

    model = SuperBertForMaskedLM(SuperBertConfig(space=SearchSpace.preset("mlm"), vocab_size=30522))
    out = model(input_ids, attention_mask, arch=Arch.parse("5-564-1054-8-512"), labels=labels)

The arch is an argument of `forward`; nothing about it is stored on the modules. Which stored layers a sub-model of
L layers runs is the config's depth rule (`depth_layers`: the first L, evenly spread, or ranked by importance);
it is saved in ``config.json``, so extraction copies exactly the layers the supernet ran.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .arch import Arch
from .errors import UserError
from .initialization import init_bert_weights
from .io import atomic_path, atomic_write_json, copy_tokenizer_files
from .layers import (Embeddings, Encoder, LayerProbe, Layout, PredictionHeadTransform, TiedEmbedding, additive_mask,
                     mlm_logits)
from .space import SearchSpace

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SUPERNET_TYPE = "autotinybert-supernet"
DEPTH_RULES = ("first", "spread", "importance")
"""Which stored layers a sub-model of L layers runs (`depth_layers`); extraction copies exactly those."""


class SupernetError(UserError):
    """A supernet folder or an arch that the supernet cannot run."""


def depth_layers(rule: str, layers: int, total: int, ranking: Sequence[int] | None = None) -> list[int]:
    """The stored layers (ascending) a sub-model of `layers` layers runs, out of `total`.

    * ``first``: 0 .. L-1 (the paper's rule);
    * ``spread``: evenly spread, always ending with the last layer -- TinyBERT's uniform layer map,
      ``floor((i + 1) * total / L) - 1``: 3 of 6 -> [1, 3, 5], 2 of 6 -> [2, 5], 1 of 6 -> [5];
    * ``importance``: the first L entries of `ranking` (every layer once, most important first), in stored order.
    """
    if not 1 <= layers <= total:
        raise SupernetError(f"a sub-model of {layers} layers does not fit in {total} stored layers")
    if rule == "first":
        return list(range(layers))
    if rule == "spread":
        return [(i + 1) * total // layers - 1 for i in range(layers)]
    if rule == "importance":
        if ranking is None or sorted(ranking) != list(range(total)):
            raise SupernetError(f"depth rule 'importance' needs a ranking of all {total} layers, got {ranking!r}")
        return sorted(ranking[:layers])
    raise SupernetError(f"unknown depth rule {rule!r}; choose one of {DEPTH_RULES}")


@dataclass
class SuperBertConfig:
    """Everything needed to rebuild a SuperBERT: the search space (which fixes the max arch) and BERT's settings."""

    space: SearchSpace
    vocab_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    depth_rule: str = "first"  # which stored layers a sub-model of L layers runs (`depth_layers`)
    layer_ranking: list[int] | None = None  # depth rule 'importance': stored layers, most important first
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (training run, tokenizer, ...)

    def __post_init__(self) -> None:
        if isinstance(self.space, (str, dict)):
            self.space = SearchSpace.load(self.space)
        if not isinstance(self.vocab_size, int) or self.vocab_size <= 0:
            raise SupernetError(f"vocab_size must be a positive integer, got {self.vocab_size!r}")
        if self.layer_ranking is not None:
            self.layer_ranking = [int(i) for i in self.layer_ranking]
        depth_layers(self.depth_rule, 1, self.max_arch.layers, self.layer_ranking)  # a bad rule fails here

    def layer_ids(self, layers: int) -> list[int]:
        """The stored layers a sub-model of `layers` layers runs, under this supernet's depth rule."""
        return depth_layers(self.depth_rule, layers, self.max_arch.layers, self.layer_ranking)

    @property
    def max_arch(self) -> Arch:
        return self.space.max_arch

    @property
    def layout(self) -> Layout:
        return "head_major" if self.space.attention == "heads" else "dim_major"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["space"] = self.space.to_dict()
        return {"model_type": SUPERNET_TYPE, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuperBertConfig:
        data = dict(data)
        model_type = data.pop("model_type", None)
        if model_type != SUPERNET_TYPE:
            raise SupernetError(f"config model_type is {model_type!r}, expected {SUPERNET_TYPE!r}: not a supernet config")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SupernetError(f"supernet config has unknown key(s) {unknown}")
        if "space" not in data or "vocab_size" not in data:
            raise SupernetError("supernet config needs 'space' and 'vocab_size'")
        return cls(**{**data, "space": SearchSpace.from_dict(data["space"])})


@dataclass
class SuperBertOutput:
    last_hidden_state: Tensor  # (B, T, hidden)
    hidden_states: tuple[Tensor, ...] | None = None  # embeddings + every layer, (B, T, hidden) each
    attentions: Tensor | None = None  # last layer's attention probabilities, (B, h, T, T)
    attention_scores: Tensor | None = None  # last layer's raw pre-softmax scores (before the mask), (B, h, T, T)
    logits: Tensor | None = None  # MLM logits: (B, T, V), or (N, V) over labelled positions when labels are given
    loss: Tensor | None = None  # MLM cross-entropy over labelled positions (labels != -100)


class SuperBertModel(nn.Module):
    """Embeddings + encoder at the max arch (parameter names as in `transformers.BertModel`)."""

    def __init__(self, config: SuperBertConfig):
        super().__init__()
        m = config.max_arch
        self.embeddings = Embeddings(config.vocab_size, m.hidden, config.max_position_embeddings,
                                     config.type_vocab_size, config.layer_norm_eps, config.hidden_dropout_prob,
                                     config.pad_token_id)
        self.encoder = Encoder(m.layers, m.hidden, m.ffn, m.qkv, config.layer_norm_eps,
                               config.hidden_dropout_prob, config.attention_probs_dropout_prob)


class MaskedLMHead(nn.Module):
    """`cls.predictions`: transform + output bias; the decoder weight is the word embedding matrix."""

    def __init__(self, hidden: int, vocab_size: int, layer_norm_eps: float):
        super().__init__()
        self.transform = PredictionHeadTransform(hidden, layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))


class _Cls(nn.Module):
    def __init__(self, hidden: int, vocab_size: int, layer_norm_eps: float):
        super().__init__()
        self.predictions = MaskedLMHead(hidden, vocab_size, layer_norm_eps)


class SuperBertForMaskedLM(nn.Module):
    """The SuperBERT with its MLM head (tied word embeddings). `forward(..., arch=...)` runs one sub-model."""

    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.config = config
        self.bert = SuperBertModel(config)
        self.cls = _Cls(config.max_arch.hidden, config.vocab_size, config.layer_norm_eps)
        self._checked: set[Arch] = set()
        self.reset_parameters()

    @property
    def space(self) -> SearchSpace:
        return self.config.space

    def reset_parameters(self) -> None:
        """BERT's initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorms."""
        init_bert_weights(self, self.config.initializer_range)  # draws from torch's global RNG, module order
        nn.init.zeros_(self.cls.predictions.bias)

    def check_arch(self, arch: Arch | str) -> Arch:
        """Parse and check that this supernet can run `arch` (inside its max arch, its attention cut)."""
        arch = Arch.parse(arch)
        if arch in self._checked:
            return arch
        m, space = self.config.max_arch, self.config.space
        problems = [f"{name}={getattr(arch, name)} > max {getattr(m, name)}"
                    for name in ("layers", "hidden", "ffn", "qkv") if getattr(arch, name) > getattr(m, name)]
        if space.attention == "heads" and arch.head_size != space.head_size:
            problems.append(f"head size {arch.head_size} (qkv/heads) must be {space.head_size} for the 'heads' cut")
        if space.attention == "dims" and arch.heads != m.heads:
            problems.append(f"heads={arch.heads} must be {m.heads} for the 'dims' cut")
        if problems:
            raise SupernetError(f"supernet (max arch {m}, '{space.attention}' cut) cannot run arch {arch}: "
                                + "; ".join(problems))
        self._checked.add(arch)
        return arch

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        arch: Arch | str,
        labels: Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        return_logits: bool = False,
        probe: LayerProbe | None = None,
    ) -> SuperBertOutput:
        """Run sub-model `arch` (its layers are those the config's depth rule picks for ``arch.layers``).

        input_ids, attention_mask, token_type_ids: (B, T). With `labels` (B, T; -100 = ignore), the MLM head runs
        only on the labelled positions and `loss` / `logits` (N, V) cover those. With `return_logits` and no labels,
        logits are (B, T, V). `output_attentions` returns the last layer's attention probabilities. `probe` receives
        intermediate activations as (name, layer index, tensor) (see `layers.Layer.forward`; "embeddings" has -1).
        """
        arch = self.check_arch(arch)
        emb = self.bert.embeddings
        words, decoder_weight = TiedEmbedding.apply(emb.word_embeddings.weight, input_ids, arch.hidden,
                                                    emb.word_embeddings.padding_idx)
        x = emb(input_ids, token_type_ids, None, arch.hidden, words=words)
        mask = additive_mask(attention_mask, x.dtype)
        if probe is not None:
            probe("embeddings", -1, x)  # (B, T, hidden), after the embedding LayerNorm
        layer_ids = None if self.config.depth_rule == "first" else self.config.layer_ids(arch.layers)
        enc = self.bert.encoder(x, mask, arch, self.config.layout, output_hidden_states,
                                "last" if output_attentions else "none", layer_ids, probe)
        out = SuperBertOutput(
            last_hidden_state=enc.last_hidden_state,
            hidden_states=enc.hidden_states,
            attentions=enc.attentions[-1] if output_attentions else None,
            attention_scores=enc.attention_scores[-1] if output_attentions else None,
        )
        if labels is not None:
            selected = labels != -100
            hidden = enc.last_hidden_state[selected]  # (N, hidden): no logits for unlabelled positions
            out.logits = self.mlm_logits(hidden, arch.hidden, decoder_weight)
            out.loss = F.cross_entropy(out.logits, labels[selected])
        elif return_logits:
            out.logits = self.mlm_logits(enc.last_hidden_state, arch.hidden, decoder_weight)
        return out

    def mlm_logits(self, hidden_states: Tensor, hidden: int, decoder_weight: Tensor | None = None) -> Tensor:
        """MLM logits (..., V) of `hidden_states` (..., hidden); `decoder_weight` is the (V, hidden) tied view."""
        head = self.cls.predictions
        if decoder_weight is None:
            decoder_weight = self.bert.embeddings.word_embeddings.weight
        return mlm_logits(head.transform, decoder_weight, head.bias, hidden_states, hidden)

    # ----- folders -------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (each atomically; weights first) and tokenizer files."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(out / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "model_type": SUPERNET_TYPE})
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, out)
        atomic_write_json(out / CONFIG_NAME, self.config.to_dict())
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> SuperBertForMaskedLM:
        """Load a folder written by `save_pretrained`, with a clear error for anything missing or mismatched."""
        directory = Path(directory)
        if not directory.is_dir():
            raise SupernetError(f"supernet folder {directory} does not exist")
        config_file, weights_file = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for file in (config_file, weights_file):
            if not file.is_file():
                raise SupernetError(f"supernet folder {directory} has no {file.name}; "
                                    "it must hold config.json and model.safetensors written by save_pretrained")
        try:
            data = json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SupernetError(f"{config_file} is not valid JSON: {err}") from None
        config = SuperBertConfig.from_dict(data)
        model = cls(config)
        expected = model.state_dict()
        try:
            with safe_open(str(weights_file), framework="pt", device=str(map_location)) as handle:
                keys = set(handle.keys())
                missing = sorted(set(expected) - keys)
                unexpected = sorted(keys - set(expected))
                if missing or unexpected:
                    raise SupernetError(
                        f"{weights_file} does not match {config_file} (max arch {config.max_arch}): "
                        f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                        f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
                    )
                state = {}
                for key in expected:
                    tensor = handle.get_tensor(key)
                    if tensor.shape != expected[key].shape:
                        raise SupernetError(
                            f"{weights_file}: tensor {key} has shape {tuple(tensor.shape)}, but config.json "
                            f"(max arch {config.max_arch}, vocab {config.vocab_size}) needs {tuple(expected[key].shape)}"
                        )
                    state[key] = tensor
        except SupernetError:
            raise
        except Exception as err:  # safetensors raises its own error types for truncated or foreign files
            raise SupernetError(f"{weights_file} is not a readable safetensors file: {err}") from None
        model.load_state_dict(state)
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
