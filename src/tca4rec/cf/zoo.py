"""The zoo, complete: importing this module registers every model of the package, so a
lookup by name (the trainer, run folders, the CLI, study files) always sees all of them.
A new model is one file with a ``@register_cf_model`` class, imported here."""

from __future__ import annotations

from typing import Any

from tca4rec.cf import bert4rec, caser, gru4rec, mostpop, sasrec  # noqa: F401  (each registers its model)
from tca4rec.cf.base import CF_MODELS, CFModel
from tca4rec.errors import ConfigError


def cf_model_class(name: str) -> type[CFModel]:
    if name not in CF_MODELS:
        raise ConfigError(f"unknown CF model '{name}' (known: {', '.join(sorted(CF_MODELS))})")
    return CF_MODELS[name]


def build_cf_model(name: str, num_items: int, num_users: int, **config_overrides: Any) -> CFModel:
    """A fresh model ``name`` with its default config updated by ``config_overrides``."""
    cls = cf_model_class(name)
    return cls(cls.config_class.from_dict(config_overrides), num_items, num_users)
