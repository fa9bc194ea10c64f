"""Offline demo data, built at run time from what every Python installation carries: the standard library's
docstrings (English prose written by people), never random tokens and never copied datasets."""

from .corpus import DocstringCorpus, build_demo_data, collect_docstrings
from .task import DOCPAIR

__all__ = ["DOCPAIR", "DocstringCorpus", "build_demo_data", "collect_docstrings"]
