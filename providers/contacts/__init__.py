"""A second declarative example in another API style: a contacts API with an API-key header,
cursor + ``has_more`` paging, items nested in the body and epoch-second checkpoints
(``contacts.yaml``; a fake server in ``fake_api.py``)."""

from __future__ import annotations

from pathlib import Path

from integrations_dagster.declarative import RestProvider

CONTACTS_YAML = Path(__file__).with_name("contacts.yaml")


def contacts_provider() -> RestProvider:
    """The provider; pass ``provider.listener`` to ``build_definitions(listeners=[...])`` and create its
    table with ``integrations rest migrate providers/contacts/contacts.yaml``."""
    return RestProvider.from_yaml(CONTACTS_YAML)
