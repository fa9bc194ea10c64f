"""autotinybert: find and build the best small BERT for a latency budget (AutoTinyBERT, ACL 2021)."""

from .arch import BERT_BASE, Arch, ArchError
from .extract import extract, save_extracted, to_plain_bert
from .modeling import (
    AutoTinyBertConfig,
    AutoTinyBertForMaskedLM,
    AutoTinyBertForQuestionAnswering,
    AutoTinyBertForSequenceClassification,
    AutoTinyBertModel,
    AutoTinyBertPreTrainedModel,
)
from .space import DimRange, SearchSpace, SpaceError
from .supernet import SuperBertConfig, SuperBertForMaskedLM, SuperBertOutput, SupernetError

__version__ = "0.1.0"

__all__ = [
    "Arch", "ArchError", "BERT_BASE", "DimRange", "SearchSpace", "SpaceError",
    "SuperBertConfig", "SuperBertForMaskedLM", "SuperBertOutput", "SupernetError",
    "AutoTinyBertConfig", "AutoTinyBertModel", "AutoTinyBertForMaskedLM",
    "AutoTinyBertForSequenceClassification", "AutoTinyBertForQuestionAnswering", "AutoTinyBertPreTrainedModel",
    "extract", "save_extracted", "to_plain_bert",
]
