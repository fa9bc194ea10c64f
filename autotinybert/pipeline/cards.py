"""The pipeline's additions to the model cards of the models it extracts: how each arch was found (the search's
method, evaluator, seed, window, its rank) and its latency measured beside BERT-base in the extract stage. Further
training and fine-tuning inherit both from these cards (`modelcard.CardInfo.inherit`)."""

from __future__ import annotations

import json
from pathlib import Path


def describe_extracted(outputs, inputs) -> None:
    """Update the card of every extracted model of `outputs` (`ExtractOutputs`) with what `inputs`
    (`ExtractInputs`) and the searches' folders say."""
    from ..latency.device import device_record
    from ..modelcard import latency_facts, update_card

    settings = inputs.latency.timing_kwargs()
    device = device_record(**{k: settings[k] for k in ("backend", "device", "threads", "batch", "seq_len", "clock")})
    searches = {t.speedup: t for t in inputs.targets}
    for m in outputs.models:
        if m.same_as or m.measured_ms is None:
            continue
        target = searches.get(m.speedup_target)
        search = (target.fast if m.kind == "fast" else target.searched) if target is not None else None
        found = {"supernet": inputs.supernet.supernet, "supernet steps": inputs.supernet.steps,
                 "speedup target": m.speedup_target, "picked as": m.kind, "search rank": m.search_rank,
                 "search fitness": m.search_fitness, "predicted latency (ms)": round(m.predicted_ms, 4)
                 if m.predicted_ms is not None else None}
        if search is not None:
            header = Path(search.out) / "config.json"
            if header.is_file():
                data = json.loads(header.read_text())
                config = data.get("config", {})
                found.update({"space": (data.get("space") or {}).get("name"), "search": config.get("method"),
                              "evaluator": data.get("evaluator"), "search seed": config.get("seed"),
                              "generations x population": f"{config.get('generations')} x {config.get('population')}",
                              "evaluated": search.evaluated or None, "search folder": search.out})
        update_card(m.extracted_dir, found={k: v for k, v in found.items() if v is not None},
                    latency=latency_facts(m.measured_ms, outputs.reference_ms, device, "measured"))
