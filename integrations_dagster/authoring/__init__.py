"""What a provider author touches: ``Provider``, ``SyncSession``, events, listeners, staged batches,
``Integration`` and the sync context (``current_sync``). Public names are re-exported by
``integrations_dagster``; import them from there."""
