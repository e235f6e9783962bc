"""The sync engine, with no Dagster imports: runs, enumeration, dispatch, cursor, reconcile, health."""
