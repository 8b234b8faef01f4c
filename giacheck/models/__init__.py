"""Model zoo: a registry of entries with metadata, built offline with random (seeded) initialization."""

from giacheck.models.registry import (
    ModelEntry,
    NormalizedModel,
    build,
    get_entry,
    list_models,
    register_alias,
    register_model,
)

__all__ = ["ModelEntry", "NormalizedModel", "build", "get_entry", "list_models", "register_alias", "register_model"]
