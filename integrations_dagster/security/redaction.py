"""Keep secrets out of anything the framework writes: errors, logs, the Dagster event log."""

from __future__ import annotations

from typing import Any


def secret_values(integration: Any) -> list[str]:
    values: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif v is not None:
            s = str(v)
            if len(s) >= 4:
                values.append(s)

    walk(getattr(integration, "credentials", None) or {})
    return sorted(set(values), key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """Mask every known secret (and its URL-encoded forms) in ``text``: the HTTP layer's rule."""
    from integrations_dagster.security.redact import redact_text

    return redact_text(text, secrets)


def safe_error(exc: BaseException, integration: Any) -> str:
    return scrub(f"{type(exc).__name__}: {exc}", secret_values(integration))[:4000]
