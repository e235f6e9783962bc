"""Typed integration metadata and credentials: a provider declares them as pydantic models.

``Provider.metadata_model`` / ``Provider.credentials_model`` (None: anything goes) are checked when
an integration is created (``integrations add``, ``operations.add_integration``), so a missing
``repo`` or token is named at once instead of failing the first sync. What is stored is what was
given (the check does not rewrite values); ``Provider.metadata_of(integration)`` returns the model.

Messages name fields, group the missing ones, and never show a credential's value.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from integrations_dagster.errors import InvalidIntegrationConfig


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def config_problems(model: type[BaseModel] | None, data: Any, section: str, *, secret: bool) -> tuple[list[str], list[str]]:
    """(messages, field names) of what is wrong with ``data`` for ``model``; empty when it validates."""
    if model is None:
        return [], []
    if not isinstance(data, dict):
        return [f"{section} must be a mapping of field names to values, got {type(data).__name__}"], [section]
    try:
        model.model_validate(data)
    except ValidationError as exc:
        missing: list[str] = []
        unknown: list[str] = []
        wrong: list[str] = []
        fields: list[str] = []
        for err in exc.errors(include_url=False):
            name = _loc(err["loc"]) or section
            fields.append(f"{section}.{name}")
            if err["type"] == "missing":
                missing.append(name)
            elif err["type"] == "extra_forbidden":
                unknown.append(name)
            else:
                got = "" if secret else f" (got {_shown(err.get('input'))})"
                msg = err["msg"].removeprefix("Value error, ")
                wrong.append(f"{section}.{name}: {msg}{got}")
        messages = []
        if missing:
            messages.append(f"{section} is missing {', '.join(missing)}")
        messages += wrong
        if unknown:
            known = ", ".join(model.model_fields) or "none"
            messages.append(f"{section} has unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                            f"(known: {known})")
        return messages, list(dict.fromkeys(fields))
    return [], []


def describe(model: type[BaseModel] | None) -> str:
    """``owner (required), repo (required), base_url, since`` for a model; ``any`` for None."""
    if model is None:
        return "any"
    return ", ".join(f"{n} (required)" if f.is_required() else n for n, f in model.model_fields.items()) or "none"


def validate_integration_config(
    provider_key: str, name: str, metadata_model: type[BaseModel] | None, credentials_model: type[BaseModel] | None,
    metadata: Any, credentials: Any,
) -> None:
    """Raise ``InvalidIntegrationConfig`` naming every missing, wrong or unknown field."""
    meta_msgs, meta_fields = config_problems(metadata_model, metadata if metadata is not None else {}, "metadata",
                                             secret=False)
    cred_msgs, cred_fields = config_problems(credentials_model, credentials if credentials is not None else {},
                                             "credentials", secret=True)
    if not meta_msgs and not cred_msgs:
        return
    declared = []
    if meta_msgs:
        declared.append(f"metadata: {describe(metadata_model)}")
    if cred_msgs:
        declared.append(f"credentials: {describe(credentials_model)}")
    raise InvalidIntegrationConfig(
        f"{provider_key} integration {name!r}: {'; '.join(meta_msgs + cred_msgs)} ({provider_key} takes "
        f"{'; '.join(declared)})",
        meta_fields + cred_fields,
    )
