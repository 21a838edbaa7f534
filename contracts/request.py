"""A pydantic request model built from a model contract: the service's hard limits in one place."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from contracts.model import ModelContract

_PYTHON_TYPES: dict[str, type] = {"float": float, "integer": int}


def _class_name(example: str) -> str:
    words = "".join(character if character.isalnum() else " " for character in example).split()
    return "".join(word.capitalize() for word in words) + "Features"


def request_model(contract: ModelContract) -> type[BaseModel]:
    """One row of features: every field required and finite, inside its declared bounds, nothing extra."""
    fields: dict[str, Any] = {
        feature.name: (
            _PYTHON_TYPES[feature.type],
            Field(ge=feature.minimum, le=feature.maximum, description=feature.description or None),
        )
        for feature in contract.features
    }
    return create_model(
        _class_name(contract.example),
        __config__=ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True),
        __doc__=f"One row of the {contract.example} model's inputs ({contract.task}).",
        **fields,
    )
