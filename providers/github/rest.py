"""GitHub issues written as configuration (``issues.yaml``): the declarative twin of ``issues.py``.

Importing this module registers the ``github_app`` auth kind for declarative providers (a token
in ``credentials['token']``, or a GitHub App installation: ``providers.github.app``).
"""

from __future__ import annotations

from pathlib import Path

from integrations_dagster.declarative import RestProvider, register_auth
from providers.github.app import github_auth

ISSUES_YAML = Path(__file__).with_name("issues.yaml")

register_auth("github_app", github_auth)


def github_issues_rest() -> RestProvider:
    return RestProvider.from_yaml(ISSUES_YAML)
