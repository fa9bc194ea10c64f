"""Offline demo data, built at run time from what every Python installation carries: the standard library's
docstrings (English prose written by people), never random tokens and never copied datasets."""

from .._lazy import lazy_exports
from .task import DOCPAIR  # eager: importing it registers the ``docpair`` task (light: no torch)

__all__ = ["DOCPAIR", "DocstringCorpus", "build_demo_data", "collect_docstrings"]

__getattr__, __dir__ = lazy_exports(__name__, {
    ".corpus": ["DocstringCorpus", "build_demo_data", "collect_docstrings"],
})
