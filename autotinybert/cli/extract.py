"""`autotinybert extract`: write a sub-model of a supernet as a Hugging Face model folder."""

from __future__ import annotations

from typing import Literal

from ..config import Config, PathStr, path_field
from . import Command


class ExtractConfig(Config):
    """Slice `arch` out of a supernet folder and write config.json + model.safetensors (+ the tokenizer files when
    the supernet folder has them). Load it with transformers' AutoModel* after `import autotinybert`, or with plain
    transformers when written with plain_bert=true."""

    supernet: PathStr = path_field("", min_length=1)
    """Supernet folder (config.json + model.safetensors)."""
    arch: str = ""
    """L-dm-df-h-dqkv, e.g. 5-564-1054-8-512."""
    out: PathStr = path_field("", min_length=1)
    """Output folder (new or empty unless overwrite=true)."""
    head: Literal["mlm", "base"] = "mlm"
    """Model class to write."""
    plain_bert: bool = False
    """Write model_type 'bert' (stock BertModel/BertForMaskedLM); needs qkv == hidden."""
    allow_outside_space: bool = False
    """Accept an arch that fits the supernet but is not on the search space's grid."""
    overwrite: bool = False
    """Replace an existing, non-empty out folder."""
    predictor: PathStr | None = path_field(None)
    """Latency predictor file: the card (README.md) then states the predicted latency and speedup."""
    search: PathStr | None = path_field(None)
    """The search's output folder the arch came from: the card then states how it was found."""


def run(config: ExtractConfig) -> int:
    from ..arch import Arch
    from ..extract import extract, save_extracted, to_plain_bert
    from ..io import TOKENIZER_FILES, check_output
    from ..supernet import SuperBertForMaskedLM

    arch = Arch.parse(config.arch)
    check_output(config.out, [("supernet", config.supernet)])  # out=supernet would replace the supernet
    supernet = SuperBertForMaskedLM.from_pretrained(config.supernet)
    if not config.allow_outside_space:
        supernet.space.check(arch)
    model = extract(supernet, arch, head=config.head)
    if config.plain_bert:
        model = to_plain_bert(model)
    out = save_extracted(model, config.out, tokenizer_dir=config.supernet, overwrite=config.overwrite,
                         card=extracted_card(model, config, supernet.space.name))
    has_tokenizer = any((out / name).exists() for name in TOKENIZER_FILES)
    print(f"wrote {arch} ({sum(p.numel() for p in model.parameters()):,} parameters) to {out}"
          f"{'' if has_tokenizer else ' (no tokenizer files in the supernet folder)'}")
    return 0


def extracted_card(model, config: ExtractConfig, space_name: str):
    """The card of an extracted model: the supernet, the search that found the arch, the predicted latency."""
    import json
    from pathlib import Path

    from ..modelcard import CardInfo, latency_facts

    found: dict = {"supernet": config.supernet, "space": space_name}
    if config.search:
        header = Path(config.search) / "config.json"
        if header.is_file():
            data = json.loads(header.read_text())
            settings = data.get("config", {})
            found.update({"search": settings.get("method"), "evaluator": data.get("evaluator"),
                          "search seed": settings.get("seed"), "speedup target": settings.get("speedup"),
                          "latency target (ms)": settings.get("latency_ms"),
                          "generations x population": f"{settings.get('generations')} x {settings.get('population')}",
                          "search folder": config.search})
    latency = None
    if config.predictor:
        from ..latency import LatencyPredictor

        predictor = LatencyPredictor.load(config.predictor)
        latency = latency_facts(predictor.predict(model.config.arch), predictor.reference_ms, predictor.device,
                                "predicted")
    return CardInfo.of_model(model, "extracted", source=config.supernet,
                             found={k: v for k, v in found.items() if v is not None}, latency=latency)


COMMANDS = [Command("extract", "extract a sub-model from a supernet into a save_pretrained folder",
                    f"{__name__}:ExtractConfig", run,
                    examples=("autotinybert extract supernet=runs/supernet arch=3-256-512-4-256 out=runs/best",))]
