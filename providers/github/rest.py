"""GitHub issues written as configuration (``issues.yaml``): the declarative twin of ``issues.py``.

Its auth kind ``github_app`` (a token in ``credentials['token']``, or a GitHub App installation:
``providers.github.app``) is not the framework's: the factory is passed to the provider explicitly.
"""

from __future__ import annotations

from pathlib import Path

from integrations_dagster.declarative import RestProvider
from providers.github.app import github_auth

ISSUES_YAML = Path(__file__).with_name("issues.yaml")


def github_issues_rest() -> RestProvider:
    """The provider; pass ``provider.listener`` to ``build_definitions(listeners=[...])``."""
    return RestProvider.from_yaml(ISSUES_YAML, auth={"github_app": github_auth})
