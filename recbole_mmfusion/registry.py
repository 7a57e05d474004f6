"""Find a model class by name: the plugin's models first, then RecBole's.

RecBole's own ``get_model`` only looks inside the ``recbole`` package (and fails with an ImportError on a
name it does not know, because probing ``exlib_recommender`` needs lightgbm and xgboost). This lookup also
accepts any capitalisation of a name and suggests the closest names on a miss.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil

_PLUGIN_PACKAGE = "recbole_mmfusion.models"
_RECBOLE_PACKAGES = (
    "recbole.model.general_recommender",
    "recbole.model.context_aware_recommender",
    "recbole.model.sequential_recommender",
    "recbole.model.knowledge_aware_recommender",
)
_registered: dict[str, type] = {}


class UnknownModelError(ValueError):
    """No model of that name in the plugin, in RecBole, or among registered classes."""


def register_model(cls: type) -> type:
    """Make ``cls`` findable by its class name (usable as a decorator on your own recommender)."""
    _registered[cls.__name__.lower()] = cls
    return cls


def _module_names(package: str) -> list[str]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    return [info.name for info in pkgutil.iter_modules(spec.submodule_search_locations) if not info.ispkg]


def _class_in_module(module_path: str, lowered: str):
    module = importlib.import_module(module_path)
    for attribute, value in vars(module).items():
        if attribute.lower() == lowered and isinstance(value, type) and value.__module__ == module.__name__:
            return value
    return None


def available_models() -> list[str]:
    """Lower-case names of every model this lookup can find (module names, without importing them)."""
    names = set(_registered)
    for package in (_PLUGIN_PACKAGE, *_RECBOLE_PACKAGES):
        names.update(_module_names(package))
    return sorted(names)


def get_model(name: str) -> type:
    """The model class called ``name`` (case-insensitive); plugin models shadow RecBole's."""
    lowered = str(name).lower()
    if lowered in _registered:
        return _registered[lowered]
    for package in (_PLUGIN_PACKAGE, *_RECBOLE_PACKAGES):
        if lowered in _module_names(package):
            found = _class_in_module(f"{package}.{lowered}", lowered)
            if found is not None:
                return found
    close = difflib.get_close_matches(lowered, available_models(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model '{name}'{hint}")
