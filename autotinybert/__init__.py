"""autotinybert: find and build the best small BERT for a latency budget (AutoTinyBERT, ACL 2021).

The public names load on first access (PEP 562), so ``import autotinybert`` -- and the command line, which parses
its arguments first -- imports neither torch nor transformers. The model classes still join transformers' Auto
classes: as soon as transformers is imported (or now, if it already is), `autotinybert.modeling` is imported,
which registers them, so ``import autotinybert; AutoModel.from_pretrained(folder)`` works as before.
"""

import importlib

from ._lazy import lazy_exports, when_imported

__version__ = "0.1.0"

__all__ = [
    "Arch", "ArchError", "BERT_BASE", "DimRange", "SearchSpace", "SpaceError",
    "SuperBertConfig", "SuperBertForMaskedLM", "SuperBertOutput", "SupernetError",
    "AutoTinyBertConfig", "AutoTinyBertModel", "AutoTinyBertForMaskedLM",
    "AutoTinyBertForSequenceClassification", "AutoTinyBertForQuestionAnswering", "AutoTinyBertPreTrainedModel",
    "extract", "save_extracted", "to_plain_bert",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    ".arch": ["BERT_BASE", "Arch", "ArchError"],
    ".extract": ["extract", "save_extracted", "to_plain_bert"],
    ".modeling": ["AutoTinyBertConfig", "AutoTinyBertForMaskedLM", "AutoTinyBertForQuestionAnswering",
                  "AutoTinyBertForSequenceClassification", "AutoTinyBertModel", "AutoTinyBertPreTrainedModel"],
    ".space": ["DimRange", "SearchSpace", "SpaceError"],
    ".supernet": ["SuperBertConfig", "SuperBertForMaskedLM", "SuperBertOutput", "SupernetError"],
})


def _register_auto_classes() -> None:
    importlib.import_module(".modeling", __name__)  # registers with AutoConfig / AutoModel* on import


when_imported("transformers", _register_auto_classes)
