"""Settings of every component from its environment, with the command line's values on top.

The values the user gave are passed to the settings class as init arguments, which pydantic-settings
ranks above the environment and validates like any other source (``model_copy(update=...)`` would
skip validation). Any invalid value, from either side, becomes one :class:`ConfigError` line
(exit 2) that names the environment variable or the given value.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from contracts.errors import ConfigError

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def settings_with_overrides(settings_class: type[SettingsT], **overrides: Any) -> SettingsT:
    """``settings_class`` from its environment; overrides that are not None win and are validated too."""
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return settings_class(**given)
    except ValidationError as error:
        problems = "; ".join(_describe(settings_class, problem, given) for problem in error.errors())
        raise ConfigError(problems) from None


def _describe(settings_class: type[BaseSettings], problem: Any, given: dict[str, Any]) -> str:
    if not problem["loc"]:
        return f"invalid settings: {problem['msg']}"
    field, *inner = [str(part) for part in problem["loc"]]
    detail = "".join(f".{part}" for part in inner)
    if field in given:
        value = given[field]
        # A list item's problem names that item (e.g. the one missing values file), not the whole list.
        index = problem["loc"][1] if len(problem["loc"]) > 1 else None
        if isinstance(value, list | tuple) and isinstance(index, int) and 0 <= index < len(value):
            value = value[index]
        shown = str(value) if isinstance(value, PurePath) else repr(value)
        return f"invalid setting {field}{detail} (given {shown}): {problem['msg']}"
    return f"invalid setting {_env_name(settings_class, field)}{detail}: {problem['msg']}"


def _env_name(settings_class: type[BaseSettings], field: str) -> str:
    """The variable a field is read from: its string alias (e.g. MLFLOW_TRACKING_URI) or prefix + name."""
    info = settings_class.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, str):
        return alias
    if info is None:
        return field
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    return f"{prefix}{field}".upper()
