"""Tether-style push/pull provider (issue 13): the bundled provider, its local table, a fake server."""

from providers.tether.local import apply_tether_snapshot, tether_records
from providers.tether.provider import TetherProvider, TetherSnapshot

__all__ = ["TetherProvider", "TetherSnapshot", "apply_tether_snapshot", "tether_records"]
