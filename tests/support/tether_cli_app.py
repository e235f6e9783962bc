"""``INTEGRATIONS_DEFINITIONS=tests.support.tether_cli_app:defs``: the Tether app for the CLI tests (database
from ``INTEGRATIONS_DATABASE_URL``)."""

from tests.support.tether_app import make_defs

defs = make_defs(None)
