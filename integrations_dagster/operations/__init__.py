"""Operator actions (retry, skip, advance cursor, prune, ...) and the CLI's progress display; the
``integrations`` command itself is ``integrations_dagster.cli`` (the installed entry point)."""
