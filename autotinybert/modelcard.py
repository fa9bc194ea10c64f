"""Model cards: the ``README.md`` every model folder the toolkit writes carries, in the Hugging Face Hub's format.

    write_card(folder, CardInfo.of_model(model, kind="extracted", found={...}, latency={...}))

The file is YAML metadata between ``---`` lines (built with `huggingface_hub.ModelCardData`: ``library_name:
transformers``, ``tags``, ``base_model`` when the source is a Hub model, ``model-index`` with the measured metrics)
and a Markdown body: the arch, how it was found (space, search, evaluator, seeds: what is known when the folder is
written), latency and speedup with the device, backend, threads, batch and length, the training budget, and the
lines that load it. The metadata also holds the structured facts under ``autotinybert:``, so a model trained from
this folder inherits what is known about where it came from (`read_card`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

CARD_NAME = "README.md"
Kind = Literal["extracted", "further-trained", "fine-tuned"]
# task name (lower case, as the downstream registry spells it) -> (Hub task type, GLUE config name)
_HUB_TASKS = {"sst2": "sst2", "sst-2": "sst2", "mrpc": "mrpc", "qqp": "qqp", "mnli": "mnli", "qnli": "qnli",
              "rte": "rte", "cola": "cola", "sts-b": "stsb", "stsb": "stsb", "wnli": "wnli"}


@dataclass
class Metric:
    """One measured number for the card's model-index (values as measured: fractions stay fractions)."""

    name: str  # "accuracy", "pearson", "loss" ...
    value: float
    task: str  # the task as the run names it: "sst2", "squad", "mlm"
    dataset: str  # readable dataset name: "GLUE SST-2", "held-out corpus split"
    split: str = "validation"
    task_type: str = "text-classification"  # Hub task type: text-classification, question-answering, fill-mask


@dataclass
class CardInfo:
    """What a card says; fields left None are "not known when this folder was written" and not shown."""

    kind: Kind
    arch: str | None = None
    parameters: int | None = None
    model_type: str | None = None  # "autotinybert" needs `import autotinybert` to load; "bert" does not
    head: str | None = None  # mlm, sequence-classification, question-answering, base
    source: str | None = None  # the folder (or Hub id) it was made from
    base_model: str | None = None  # a Hub id only (the Hub refuses local paths there)
    found: dict[str, Any] = field(default_factory=dict)  # space, search method, evaluator, seed, target ...
    latency: dict[str, Any] | None = None  # median_ms, speedup, reference_ms, measured | predicted, device record
    training: dict[str, Any] = field(default_factory=dict)  # this stage's budget
    history: list[dict[str, Any]] = field(default_factory=list)  # the earlier stages' budgets, oldest first
    metrics: list[Metric] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    @classmethod
    def of_model(cls, model, kind: Kind, **fields: Any) -> CardInfo:
        """Arch, parameter count, model type and head read off a loaded model; the rest from `fields`."""
        cfg = model.config
        arch = None
        if hasattr(cfg, "num_hidden_layers"):
            qkv = getattr(cfg, "qkv_size", None) or cfg.hidden_size
            arch = f"{cfg.num_hidden_layers}-{cfg.hidden_size}-{cfg.intermediate_size}-{cfg.num_attention_heads}-{qkv}"
        from .export import ExportError, head_of

        try:
            head = head_of(model)
        except ExportError:
            head = None
        return cls(kind=kind, arch=arch, parameters=int(sum(p.numel() for p in model.parameters())),
                   model_type=getattr(cfg, "model_type", None), head=head, **fields)

    def inherit(self, source_dir: str | Path | None) -> CardInfo:
        """Fill what this card does not know from the card of the folder it was made from (found, latency,
        base_model, the earlier stages' budgets)."""
        if source_dir is None:
            return self
        earlier = read_card(source_dir)
        if not earlier:
            return self
        if not self.found:
            self.found = dict(earlier.get("found") or {})
        if self.latency is None and earlier.get("latency"):
            self.latency = dict(earlier["latency"])
        if self.base_model is None:
            self.base_model = earlier.get("base_model")
        past = list(earlier.get("history") or [])
        if earlier.get("training"):
            past.append({"stage": earlier.get("kind"), **earlier["training"]})
        self.history = past + self.history
        return self

    def facts(self) -> dict[str, Any]:
        """The structured part stored under ``autotinybert:`` in the metadata (JSON-able)."""
        data = asdict(self)
        data.pop("tags")
        return json.loads(json.dumps(data, default=str))


def _hub_id(name: str | None) -> str | None:
    """`name` when it looks like a Hub model id (``org/name`` or ``name``), not a local path."""
    if not name or Path(name).expanduser().exists() or name.startswith(("/", ".", "~")):
        return None
    return name if name.count("/") <= 1 else None


def _eval_results(info: CardInfo):
    from huggingface_hub import EvalResult

    results = []
    for m in info.metrics:
        glue = _HUB_TASKS.get(m.task.lower())
        results.append(EvalResult(task_type=m.task_type, dataset_type="nyu-mll/glue" if glue else m.task,
                                  dataset_name=m.dataset, dataset_config=glue, dataset_split=m.split,
                                  metric_type=m.name, metric_value=float(m.value), metric_name=m.name))
    return results


PIPELINE_TAGS = {"mlm": "fill-mask", "sequence-classification": "text-classification",
                 "question-answering": "question-answering", "base": "feature-extraction"}


def render(info: CardInfo, name: str) -> str:
    """The README.md text of a card."""
    from huggingface_hub import ModelCard, ModelCardData

    tags = ["autotinybert", "bert", "neural-architecture-search", info.kind, *info.tags]
    data = ModelCardData(library_name="transformers", tags=list(dict.fromkeys(tags)),
                         base_model=info.base_model or _hub_id(info.source), model_name=name,
                         pipeline_tag=PIPELINE_TAGS.get(info.head or ""),
                         eval_results=_eval_results(info) or None, autotinybert=info.facts())
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(info, name)}")
    return str(card)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def _table(rows: dict[str, Any]) -> list[str]:
    shown = [(k, v) for k, v in rows.items() if v is not None and v != {} and v != []]
    if not shown:
        return []
    return ["| | |", "|---|---|", *[f"| {k} | {_fmt(v)} |" for k, v in shown], ""]


def _body(info: CardInfo, name: str) -> str:
    what = {"extracted": "extracted from a one-shot trained SuperBERT", "further-trained": "further-trained",
            "fine-tuned": "fine-tuned"}[info.kind]
    lines = [f"# {name}", "", f"An AutoTinyBERT model ({what}): arch `{info.arch}` "
             "(layers-hidden-ffn-heads-qkv)" + (f", {info.parameters:,} parameters." if info.parameters else "."), ""]
    lines += ["## Architecture", ""] + _table({"arch (L-dm-df-h-dqkv)": info.arch, "parameters": info.parameters,
                                              "model type": info.model_type, "head": info.head,
                                              "made from": info.source})
    if info.found:
        lines += ["## How it was found", ""] + _table(info.found)
    if info.latency:
        lat = info.latency
        device = lat.get("device") or {}
        lines += ["## Latency", ""] + _table({
            "latency (ms)": lat.get("median_ms"), "speedup over BERT-base": lat.get("speedup"),
            "BERT-base (ms), same run": lat.get("reference_ms"), "how": lat.get("how"),
            "device": device.get("cpu") or device.get("gpu") or device.get("device"),
            "backend": device.get("backend"), "threads": device.get("threads"), "batch": device.get("batch"),
            "sequence length": device.get("seq_len"), "clock": device.get("clock"),
            "torch / onnxruntime": " / ".join(str(device.get(k)) for k in ("torch", "onnxruntime") if device.get(k))
            or None})
    if info.training or info.history:
        lines += ["## Training budget", ""]
        for stage in info.history:
            label = stage.get("stage") or "earlier stage"
            lines += [f"{label}: " + _fmt({k: v for k, v in stage.items() if k != "stage"}), ""]
        lines += _table(info.training)
    if info.metrics:
        lines += ["## Results", "", "| task | dataset | split | metric | value |", "|---|---|---|---|---|"]
        lines += [f"| {m.task} | {m.dataset} | {m.split} | {m.name} | {m.value:.4f} |" for m in info.metrics] + [""]
    lines += ["## Use", "", *_loading_lines(info)]
    return "\n".join(lines) + "\n"


def _loading_lines(info: CardInfo) -> list[str]:
    auto = {"mlm": "AutoModelForMaskedLM", "sequence-classification": "AutoModelForSequenceClassification",
            "question-answering": "AutoModelForQuestionAnswering"}.get(info.head or "", "AutoModel")
    code = ["```python"]
    if info.model_type != "bert":
        code.append("import autotinybert  # registers model_type 'autotinybert' with transformers' Auto classes")
    code += [f"from transformers import {auto}, AutoTokenizer", "",
             f'model = {auto}.from_pretrained("PATH/TO/THIS/FOLDER")',
             'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")', "```", "",
             "For ONNX Runtime (fp32 and dynamic INT8, written beside these files):", "", "```bash",
             "autotinybert export PATH/TO/THIS/FOLDER format=onnx quantize=int8", "```"]
    return code


def write_card(folder: str | Path, info: CardInfo, name: str | None = None) -> Path:
    """Write ``README.md`` into `folder` (atomically) and return its path."""
    from .io import atomic_write_text

    folder = Path(folder)
    return atomic_write_text(folder / CARD_NAME, render(info, name or folder.name))


def read_card(folder: str | Path) -> dict[str, Any]:
    """The ``autotinybert:`` facts of a folder's card ({} when it has none)."""
    metadata = read_metadata(folder)
    facts = metadata.get("autotinybert")
    return facts if isinstance(facts, dict) else {}


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The YAML metadata of a folder's ``README.md`` ({} when there is none)."""
    import yaml

    path = Path(folder) / CARD_NAME
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    head = text.split("---", 2)
    try:
        data = yaml.safe_load(head[1]) if len(head) == 3 else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def latency_facts(median_ms: float, reference_ms: float, device: dict[str, Any], how: str) -> dict[str, Any]:
    """The card's latency entry: `how` is "measured" (timed beside BERT-base) or "predicted" (the predictor)."""
    keep = ("backend", "device", "threads", "batch", "seq_len", "clock", "cpu", "gpu", "torch", "onnxruntime")
    return {"median_ms": round(float(median_ms), 4), "reference_ms": round(float(reference_ms), 4),
            "speedup": round(float(reference_ms) / float(median_ms), 3), "how": how,
            "device": {k: device.get(k) for k in keep if device.get(k) is not None}}


def update_card(folder: str | Path, **changes: Any) -> Path:
    """Rewrite a folder's card with some `CardInfo` fields changed (e.g. ``found=``, ``latency=`` once known)."""
    facts = read_card(folder)
    if not facts:
        raise FileNotFoundError(f"{Path(folder) / CARD_NAME} has no autotinybert model card to update")
    facts["metrics"] = [Metric(**m) for m in facts.get("metrics") or []]
    fields = set(CardInfo.__dataclass_fields__)
    info = CardInfo(**{k: v for k, v in facts.items() if k in fields})
    for key, value in changes.items():
        setattr(info, key, value)
    name = read_metadata(folder).get("model_name") or Path(folder).name
    return write_card(folder, info, name=name)
