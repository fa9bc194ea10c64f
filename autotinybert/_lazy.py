"""Lazy package exports (PEP 562) and a post-import hook, so that ``import autotinybert`` (and the CLI that parses
its arguments before doing any work) imports neither torch nor transformers.

    # in a package's __init__.py
    __getattr__, __dir__ = lazy_exports(__name__, {".arch": ["Arch", "ArchError"], ".modeling": [...]})

``from autotinybert import Arch`` then imports ``autotinybert.arch`` on first access, and only that module.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import Any, Callable, Iterable, Mapping


def lazy_exports(package: str, exports: Mapping[str, Iterable[str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` for `package`, whose public names live in the submodules that
    `exports` maps them from (relative names, ``".arch"``).

    A name is imported on first access and then cached in the package's namespace, so later lookups are plain
    attribute reads. Any submodule is reachable as an attribute too (``autotinybert.supernet`` after
    ``import autotinybert``), as it was when the package imported its submodules eagerly.
    """
    module = sys.modules[package]
    origin = {name: source for source, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        source = origin.get(name)
        if source is not None:
            value = getattr(importlib.import_module(source, package), name)
            setattr(module, name, value)
            return value
        from importlib.util import find_spec

        # Underscore names are what tools probe for (`__wrapped__`, `_pytest...`): never an import.
        if not name.startswith("_") and find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(module.__dict__) | set(origin))

    # A name exported from the submodule of the same name (`autotinybert.extract`, the function, from
    # autotinybert/extract.py): the import system binds a submodule to its package's attribute right after
    # loading it, so `import autotinybert.extract` anywhere would hide the function behind the module. An eager
    # __init__ never saw this (the submodule was loaded before the function was bound); keep the function.
    shadowed = {name for name, source in origin.items() if source == f".{name}"}
    if shadowed:
        class _Package(types.ModuleType):
            def __setattr__(self, name: str, value: Any) -> None:
                if name in shadowed and isinstance(value, types.ModuleType) \
                        and value.__name__ == f"{package}.{name}":
                    value = getattr(value, name)
                super().__setattr__(name, value)

        module.__class__ = _Package
    return __getattr__, __dir__


def when_imported(name: str, callback: Callable[[], None]) -> None:
    """Run `callback` once top-level module `name` is imported: now if it already is, else right after its
    first import finishes (inside that import statement). An error in `callback` becomes a warning, so that it
    cannot break the other package's import."""
    if name in sys.modules:
        _run(name, callback)
    elif not any(isinstance(f, _PostImportFinder) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder(name, callback))


def _run(name: str, callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception as err:  # noqa: BLE001 -- reported, never raised into someone else's import
        warnings.warn(f"autotinybert: hook after importing {name!r} failed: {err!r}", RuntimeWarning, stacklevel=2)


class _PostImportFinder:  # a MetaPathFinder (importlib.abc would cost more start-up than the rest)
    """Finds nothing itself: for `name` it takes the spec the other finders give and wraps its loader, so that
    `callback` runs after the module executes; then it removes itself from ``sys.meta_path``."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PostImportLoader(spec.loader, self)
                return spec
        return None


class _PostImportLoader:  # an importlib.abc.Loader
    def __init__(self, loader: Any, finder: _PostImportFinder) -> None:
        self.loader = loader
        self.finder = finder

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        # The module should see its own loader, not this wrapper (importlib.resources and friends ask it).
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        if self.finder in sys.meta_path:  # a failed import leaves the hook for the next attempt
            sys.meta_path.remove(self.finder)
        _run(self.finder.name, self.finder.callback)
