"""Pre-trained BERT checkpoints as the starting point of a SuperBERT (``init_from``).

    info = inspect_checkpoint("path/to/all-MiniLM-L6-v2")      # config only: arch, kind, tokenizer; no weights
    check_fits(SearchSpace.load("cpu-kd"), info)                 # every dim of the max arch <= the checkpoint's
    ckpt = load_checkpoint(info)                                 # weights in BERT names, head-major; MLM head or not
    state = supernet_state(ckpt, supernet.config, ordering)      # sliced (and ordered) into a supernet's layout

Accepted: any folder or hub name `transformers` loads as BERT (``model_type`` ``bert``: ``BertModel``,
``BertForMaskedLM``, ``BertForPreTraining``, ...), a sentence-transformers folder whose first module is such a
BERT (``modules.json``; the module may live in a sub-folder such as ``0_Transformer``), and our own
``AutoTinyBert*`` folders (``model_type`` ``autotinybert``, qkv may differ from hidden). Everything is read
through ``from_pretrained``, so a hub name works like a folder (set ``HF_HUB_OFFLINE=1`` to use only the cache).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .arch import Arch
from .errors import UserError

if TYPE_CHECKING:
    import torch

    from .importance import Ordering
    from .space import SearchSpace
    from .supernet import SuperBertConfig

SUPPORTED_MODEL_TYPES = ("bert", "autotinybert")


class InitFromError(UserError):
    """A checkpoint that cannot start a SuperBERT: not a BERT, too small for the space, another vocabulary."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint is, read from its config files alone (cheap; no weights)."""

    source: str  # as given: a folder or a hub name
    location: str  # what from_pretrained reads (the folder, or the hub name)
    subfolder: str  # "" or the sentence-transformers module folder holding the BERT (e.g. "0_Transformer")
    kind: str  # "BertModel", "BertForMaskedLM", "sentence-transformers (BertModel)", "AutoTinyBertForMaskedLM", ...
    model_type: str
    arch: Arch
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pad_token_id: int | None
    tokenizer: str | None  # a folder or hub name with the checkpoint's tokenizer; None when it has none

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "arch": str(self.arch)}


def _local_dir(source: str) -> Path | None:
    path = Path(source).expanduser()
    return path if path.exists() else None


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or "\\" in source or source.count("/") > 1


def _read_json(location: str, filename: str, subfolder: str = "") -> dict[str, Any] | list | None:
    """A JSON file of a folder or hub repo, or None when it has no such file."""
    local = _local_dir(location)
    if local is not None:
        file = local / subfolder / filename
        if not file.is_file():
            return None
        text = file.read_text(encoding="utf-8")
    else:
        from transformers.utils import cached_file

        try:
            found = cached_file(location, filename, subfolder=subfolder, _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
        except OSError as err:
            raise InitFromError(f"init_from {location!r} is neither a folder nor a reachable hub model: {err}") from None
        if found is None:
            return None
        text = Path(found).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InitFromError(f"init_from {location}: {subfolder + '/' if subfolder else ''}{filename} is not valid "
                            f"JSON: {err}") from None


def _sentence_transformer_module(source: str) -> str | None:
    """The sub-folder of a sentence-transformers model's first module ("" = the root), or None if not one."""
    modules = _read_json(source, "modules.json")
    if modules is None:
        return None
    if not isinstance(modules, list) or not modules or not all(isinstance(m, dict) for m in modules):
        raise InitFromError(f"init_from {source}: modules.json is not a sentence-transformers module list")
    first = min(modules, key=lambda m: int(m.get("idx", 0)))
    if not str(first.get("type", "")).endswith(".Transformer"):
        raise InitFromError(f"init_from {source} is a sentence-transformers model whose first module is "
                            f"{first.get('type')!r}, not a Transformer (BERT) module")
    return str(first.get("path", "")).strip("/")


def bert_folder(source: str | Path) -> str:
    """`source`, or for a local sentence-transformers folder whose first module lives in a sub-folder (older
    layout, ``0_Transformer``) that sub-folder: what ``AutoModel.from_pretrained`` loads. Never raises."""
    folder = Path(str(source)).expanduser()
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        first = min(modules, key=lambda m: int(m.get("idx", 0)))
        sub = str(first.get("path", "")).strip("/")
    except (OSError, ValueError, TypeError, AttributeError):
        return str(source)
    return str(folder / sub) if sub and (folder / sub / "config.json").is_file() else str(source)


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()


@functools.lru_cache(maxsize=32)
def inspect_checkpoint(source: str) -> CheckpointInfo:
    """Describe the checkpoint `source` (folder or hub name) from its config; refuse anything that is not a BERT.

    Cached per `source` string (config validation calls it whenever a config is built)."""
    import autotinybert.modeling  # noqa: F401  (registers model_type "autotinybert" with AutoConfig)

    source = str(source)
    local = _local_dir(source)
    if local is None and _looks_like_path(source):
        raise InitFromError(f"init_from folder {source} does not exist")
    if local is not None and not local.is_dir():
        raise InitFromError(f"init_from {source} is a file; give a model folder (with config.json) or a hub name")
    subfolder = _sentence_transformer_module(source) or ""
    config = _read_json(source, "config.json", subfolder)
    where = f"{source}/{subfolder}" if subfolder else source
    if config is None and local is None:
        raise InitFromError(f"init_from {source}: no config.json in the Hugging Face cache or on the hub (offline? "
                            "HF_HUB_OFFLINE=1 reads the cache only; or give a local folder)")
    if config is None:
        raise InitFromError(f"init_from {where} has no config.json: not a Hugging Face model folder. Give a BERT "
                            "checkpoint (BertModel, BertForMaskedLM, BertForPreTraining, a sentence-transformers "
                            "folder of a BERT, or an AutoTinyBert folder)")
    if not isinstance(config, dict):
        raise InitFromError(f"init_from {where}: config.json is not a mapping")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        hint = " (a supernet folder: extract a model from it first)" if model_type == "autotinybert-supernet" else ""
        raise InitFromError(f"init_from {where} is a {model_type!r} model{hint}; init_from takes BERT-architecture "
                            f"checkpoints (model_type {' or '.join(SUPPORTED_MODEL_TYPES)})")
    from transformers import AutoConfig

    try:
        hf = AutoConfig.from_pretrained(source, subfolder=subfolder)
    except (OSError, ValueError) as err:
        raise InitFromError(f"init_from {where}: transformers cannot read its config: {err}") from None
    act = getattr(hf, "hidden_act", "gelu")
    if act != "gelu":
        raise InitFromError(f"init_from {where} uses hidden_act={act!r}; the SuperBERT implements BERT's exact 'gelu'")
    position = getattr(hf, "position_embedding_type", "absolute")
    if position not in (None, "absolute"):
        raise InitFromError(f"init_from {where} uses position_embedding_type={position!r}; only 'absolute' (BERT's) "
                            "is supported")
    qkv = int(getattr(hf, "qkv_size", None) or hf.hidden_size)
    try:
        arch = Arch(int(hf.num_hidden_layers), int(hf.hidden_size), int(hf.intermediate_size),
                    int(hf.num_attention_heads), qkv)
    except UserError as err:
        raise InitFromError(f"init_from {where}: {err}") from None
    architectures = config.get("architectures") or ["BertModel"]
    kind = str(architectures[0])
    if subfolder or _read_json(source, "modules.json") is not None:
        kind = f"sentence-transformers ({kind})"
    if local is not None:
        candidates = [local / subfolder, local] if subfolder else [local]
        tokenizer = next((str(c) for c in candidates if _has_tokenizer(c)), None)
    else:
        tokenizer = source if not subfolder else None
    return CheckpointInfo(source=source, location=source, subfolder=subfolder, kind=kind, model_type=model_type,
                          arch=arch, vocab_size=int(hf.vocab_size),
                          max_position_embeddings=int(hf.max_position_embeddings),
                          type_vocab_size=int(hf.type_vocab_size), layer_norm_eps=float(hf.layer_norm_eps),
                          pad_token_id=getattr(hf, "pad_token_id", None), tokenizer=tokenizer)


def fit_problems(space: SearchSpace, arch: Arch) -> list[str]:
    """Why a SuperBERT over `space` cannot be cut out of a checkpoint of `arch` (empty when it can)."""
    m = space.max_arch
    problems = [f"{name} {getattr(m, name)} > {getattr(arch, name)}" for name in ("layers", "hidden", "ffn")
                if getattr(m, name) > getattr(arch, name)]
    if m.heads > arch.heads:
        problems.append(f"heads {m.heads} > {arch.heads}")
    if space.attention == "heads" and space.head_size != arch.head_size:
        problems.append(f"the 'heads' cut's head size {space.head_size} != the checkpoint's {arch.head_size} "
                        "(the 'heads' cut keeps whole heads, so the head sizes must match)")
    if space.attention == "dims" and m.qkv // m.heads > arch.head_size:
        problems.append(f"the 'dims' cut's largest head size {m.qkv // m.heads} (qkv {m.qkv} / {m.heads} heads) > "
                        f"the checkpoint's {arch.head_size}")
    return problems


def check_fits(space: SearchSpace, info: CheckpointInfo) -> None:
    """Raise `InitFromError` naming every dimension of the space's max arch that the checkpoint cannot supply."""
    problems = fit_problems(space, info.arch)
    if problems:
        raise InitFromError(f"space '{space.name}' (max arch {space.max_arch}, '{space.attention}' cut) does not fit "
                            f"inside init_from {info.source} (arch {info.arch}): " + "; ".join(problems)
                            + ". Use space=from-init, or a space whose max arch is within the checkpoint's")


def check_vocabulary(info: CheckpointInfo, tokenizer, tokenizer_source: str | None) -> None:
    """Refuse a training tokenizer whose vocabulary is not the checkpoint's (its embedding rows would be wrong)."""
    named = f"the tokenizer {tokenizer_source}" if tokenizer_source else "the tokenizer"
    if info.vocab_size != len(tokenizer):
        raise InitFromError(f"init_from {info.source} has vocab_size {info.vocab_size} but {named} has "
                            f"{len(tokenizer)} tokens; its word embeddings only fit its own tokenizer (leave tokenizer "
                            "unset to use it)")
    if info.tokenizer is not None and tokenizer_source is not None and \
            Path(str(info.tokenizer)).resolve() != Path(str(tokenizer_source)).resolve():
        from .data.tokenizer import load_tokenizer

        if load_tokenizer(info.tokenizer).get_vocab() != tokenizer.get_vocab():
            raise InitFromError(f"init_from {info.source} uses a different vocabulary from {named}; leave tokenizer "
                                "unset to use the checkpoint's own")


# ----------------------------------------------------------------------------------------------------- weights
@dataclass
class LoadedCheckpoint:
    """A checkpoint's weights in `BertForMaskedLM` names (``bert.embeddings...``, ``bert.encoder.layer.N...``,
    ``cls.predictions...``), fp32, Q/K/V features head-major, at the checkpoint's own arch."""

    info: CheckpointInfo
    state: dict[str, torch.Tensor]
    has_mlm_head: bool  # False: cls.predictions.* are absent (the supernet keeps its own initialisation)

    @property
    def arch(self) -> Arch:
        return self.info.arch


_HEAD_KEYS = ("cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
              "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
              "cls.predictions.bias")


def load_checkpoint(source: str | CheckpointInfo) -> LoadedCheckpoint:
    """Load the weights through ``AutoModelForMaskedLM.from_pretrained`` (a missing MLM head is detected from the
    loading report, not guessed from the class name)."""
    import torch
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    from .seeding import forked_global_rng

    info = source if isinstance(source, CheckpointInfo) else inspect_checkpoint(str(source))
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the load report lists the (expected) pooler / missing-head keys
    hf_logging.disable_progress_bar()
    try:
        with forked_global_rng(0):  # transformers initialises absent tensors from the global RNG; we discard them
            model, report = AutoModelForMaskedLM.from_pretrained(info.location, subfolder=info.subfolder,
                                                                 output_loading_info=True, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise InitFromError(f"cannot load the weights of init_from {info.source}: {err}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    missing = set(report.get("missing_keys", ()))
    absent_head = [k for k in _HEAD_KEYS if k in missing]
    has_head = not absent_head
    missing_body = sorted(k for k in missing if k.startswith("bert.") and "pooler" not in k)
    if missing_body:
        raise InitFromError(f"init_from {info.source} lacks encoder weights {missing_body[:4]}"
                            f"{'...' if len(missing_body) > 4 else ''}; it is not a complete BERT checkpoint")
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith(("bert.embeddings.", "bert.encoder.")) and not key.endswith("position_ids"):
            state[key] = tensor.detach().float().clone()
        elif has_head and key in _HEAD_KEYS:
            state[key] = tensor.detach().float().clone()
    return LoadedCheckpoint(info=info, state=state, has_mlm_head=has_head)


def supernet_state(checkpoint: LoadedCheckpoint, config: SuperBertConfig,
                   ordering: Ordering | None = None) -> dict[str, torch.Tensor]:
    """The checkpoint's weights for a SuperBERT with `config`: ordered by `ordering` (function-preserving), then
    the first layers by the config's depth rule, the first hidden channels / FFN neurons / heads (``heads`` cut) or
    head dimensions (``dims`` cut) of every tensor, in the config's Q/K/V layout. MLM-head tensors are included only
    when the checkpoint has them."""
    from .importance import apply_ordering

    src = checkpoint.state if ordering is None else apply_ordering(checkpoint.state, checkpoint.arch, ordering)
    a, m = checkpoint.arch, config.max_arch
    problems = fit_problems(config.space, a)
    if problems:
        raise InitFromError(f"init_from {checkpoint.info.source} (arch {a}) cannot fill a supernet with max arch {m}: "
                            + "; ".join(problems))
    H, F, heads, d = m.hidden, m.ffn, m.heads, m.qkv // m.heads
    layers = source_layers(a, config, ordering)
    dim_major = config.layout == "dim_major"

    def features(t: torch.Tensor, dim: int) -> torch.Tensor:
        """Q/K/V output features (dim 0) or attention-output input features (dim 1): first `heads` heads, first `d`
        dims of each, in the supernet's layout. t is head-major along `dim` with the checkpoint's head count."""
        t = t.movedim(dim, 0)
        rest = t.shape[1:]
        t = t.reshape(a.heads, a.head_size, *rest)[:heads, :d]  # (heads, d, ...)
        if dim_major:
            t = t.transpose(0, 1)  # (d, heads, ...): feature j * heads + i
        return t.reshape(heads * d, *rest).movedim(0, dim).contiguous()

    out = {}
    emb = "bert.embeddings."
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        out[f"{emb}{name}.weight"] = src[f"{emb}{name}.weight"][:, :H].clone()
    for p in ("weight", "bias"):
        out[f"{emb}LayerNorm.{p}"] = src[f"{emb}LayerNorm.{p}"][:H].clone()
    for i, s in enumerate(layers):
        sp, tp = f"bert.encoder.layer.{s}.", f"bert.encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            out[f"{tp}attention.self.{proj}.weight"] = features(src[f"{sp}attention.self.{proj}.weight"][:, :H], 0)
            out[f"{tp}attention.self.{proj}.bias"] = features(src[f"{sp}attention.self.{proj}.bias"], 0)
        out[f"{tp}attention.output.dense.weight"] = features(src[f"{sp}attention.output.dense.weight"][:H], 1)
        out[f"{tp}attention.output.dense.bias"] = src[f"{sp}attention.output.dense.bias"][:H].clone()
        out[f"{tp}intermediate.dense.weight"] = src[f"{sp}intermediate.dense.weight"][:F, :H].clone()
        out[f"{tp}intermediate.dense.bias"] = src[f"{sp}intermediate.dense.bias"][:F].clone()
        out[f"{tp}output.dense.weight"] = src[f"{sp}output.dense.weight"][:H, :F].clone()
        out[f"{tp}output.dense.bias"] = src[f"{sp}output.dense.bias"][:H].clone()
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            for p in ("weight", "bias"):
                out[f"{tp}{norm}.{p}"] = src[f"{sp}{norm}.{p}"][:H].clone()
    if checkpoint.has_mlm_head:
        head = "cls.predictions."
        out[f"{head}transform.dense.weight"] = src[f"{head}transform.dense.weight"][:H, :H].clone()
        for p in ("transform.dense.bias", "transform.LayerNorm.weight", "transform.LayerNorm.bias"):
            out[f"{head}{p}"] = src[f"{head}{p}"][:H].clone()
        out[f"{head}bias"] = src[f"{head}bias"].clone()
    return out


def source_layers(checkpoint_arch: Arch, config: SuperBertConfig, ordering: Ordering | None = None) -> list[int]:
    """Which checkpoint layers become the supernet's stored layers: the config's depth rule applied to the
    checkpoint's layers ('importance' reads the ordering's layer ranking of the checkpoint)."""
    from .supernet import depth_layers

    ranking = ordering.layer_ranking if ordering is not None else None
    if config.depth_rule == "importance" and ranking is None:
        raise InitFromError("depth rule 'importance' needs a layer ranking of the checkpoint (computed by the "
                            "calibration); none was given")
    return depth_layers(config.depth_rule, config.max_arch.layers, checkpoint_arch.layers, ranking)


def supernet_layer_ranking(checkpoint_arch: Arch, config: SuperBertConfig, ordering: Ordering) -> list[int]:
    """The checkpoint's layer ranking re-expressed over the supernet's stored layers (for depth rule 'importance')."""
    kept = source_layers(checkpoint_arch, config, ordering)
    return [kept.index(layer) for layer in ordering.layer_ranking if layer in kept]
