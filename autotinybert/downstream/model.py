"""The model a fine-tuning run trains: loaded with the task's head, its new parameters seeded, and described.

    loaded = load_model("models/s1", get_task("sst2"), seed=0)
    loaded.model, loaded.info    # AutoTinyBertForSequenceClassification, {"source": ..., "new_parameters": [...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..initialization import init_bert_parameters
from ..seeding import head_init_generator
from .tasks import TaskSpec


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel with the task's head
    info: dict[str, Any] = field(default_factory=dict)  # where it came from; which parameters are new


def head_config(spec: TaskSpec) -> dict[str, Any]:
    """The config keys of `spec`'s head (labels, problem type) for `AutoModelFor...from_pretrained` / `extract`."""
    if spec.kind == "span":
        return {}
    if spec.kind == "regression":
        return {"num_labels": 1, "problem_type": "regression"}
    labels = dict(enumerate(spec.labels))
    return {"num_labels": len(labels), "id2label": labels, "label2id": {v: k for k, v in labels.items()},
            "problem_type": "single_label_classification"}


def init_new_weights(model, names: set[str], seed: int) -> None:
    """Re-draw freshly created parameters (task head, pooler) with BERT's initialisation, from a generator of
    `seed` (so runs are reproducible without touching torch's global RNG)."""
    std = float(getattr(model.config, "initializer_range", 0.02))
    init_bert_parameters(model, names, std, head_init_generator(seed))


def load_model(source, spec: TaskSpec, seed: int, new_weights: set[str] | None = None) -> LoadedModel:
    """`spec`'s model: a folder loaded with `AutoModelFor{SequenceClassification,QuestionAnswering}`, or an
    already-built model (checked to have the right head). New parameters are seeded from `seed`."""
    import autotinybert  # noqa: F401  (registers model_type "autotinybert" with the Auto classes)
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, PreTrainedModel

    if isinstance(source, PreTrainedModel):
        model = source
        head = "qa_outputs" if spec.kind == "span" else "classifier"
        if not hasattr(model, head) and not any(n.startswith(head) for n, _ in model.named_parameters()):
            auto = "AutoModelForQuestionAnswering" if spec.kind == "span" else "AutoModelForSequenceClassification"
            raise UserError(f"model {type(model).__name__} has no {head} head for {spec.name}; build it with {auto}")
        if spec.kind != "span" and model.config.num_labels != spec.num_labels:
            raise UserError(f"model has {model.config.num_labels} labels, {spec.name} needs {spec.num_labels}")
        if new_weights:
            init_new_weights(model, new_weights, seed)
        return LoadedModel(model, {"source": type(model).__name__})
    path = Path(source)
    if not (path / "config.json").is_file():
        raise UserError(f"model folder {path} has no config.json; pass a save_pretrained folder")
    auto = AutoModelForQuestionAnswering if spec.kind == "span" else AutoModelForSequenceClassification
    if _model_type(path) == "autotinybert-supernet":
        raise UserError(f"{path} is a supernet folder, not a model: extract a sub-model first (autotinybert extract "
                        f"supernet={path} arch=... out=DIR) and fine-tune that folder")
    try:
        model, info = auto.from_pretrained(str(path), output_loading_info=True, **head_config(spec))
    except Exception as err:  # OSError, ValueError, KeyError, safetensors' SafetensorError (truncated file) ...
        if not isinstance(err, (OSError, ValueError, KeyError, RuntimeError)) and \
                type(err).__name__ != "SafetensorError":
            raise
        raise UserError(f"cannot load the model folder {path} with {auto.__name__}: {err}; pass a complete "
                        "save_pretrained folder (config.json + model.safetensors), e.g. one `autotinybert extract` "
                        "or `train-model` wrote") from None
    missing = set(info.get("missing_keys", ()))
    init_new_weights(model, missing, seed)
    return LoadedModel(model, {"source": str(path), "new_parameters": sorted(missing)})


def _model_type(folder: Path) -> str | None:
    """config.json's model_type (None when unreadable: the loader then says what is wrong)."""
    import json

    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def describe_model(loaded: LoadedModel, source) -> dict[str, Any]:
    """Class, arch (``L-dm-df-h-dqkv``), parameter count and latency if the folder records one."""
    model = loaded.model
    cfg = model.config
    out = dict(loaded.info)
    out["class"] = type(model).__name__
    out["model_type"] = getattr(cfg, "model_type", None)
    try:
        out["arch"] = f"{cfg.num_hidden_layers}-{cfg.hidden_size}-{cfg.intermediate_size}-" \
                      f"{cfg.num_attention_heads}-{getattr(cfg, 'qkv_size', None) or cfg.hidden_size}"
    except AttributeError:
        out["arch"] = None
    out["parameters"] = int(sum(p.numel() for p in model.parameters()))
    if isinstance(source, (str, Path)) and (Path(source) / "latency.json").is_file():
        try:
            out["latency"] = json.loads((Path(source) / "latency.json").read_text())
        except json.JSONDecodeError:
            out["latency"] = None
    return out
