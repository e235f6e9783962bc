"""Every definition resolves, and the public API is what the issue names."""

from __future__ import annotations

import integrations_dagster


def test_public_api_names():
    from integrations_dagster import (  # noqa: F401 - the names other code imports
        Integration,
        Provider,
        RateLimit,
        RateLimited,
        SyncCompleted,
        SyncItemEvent,
        SyncItemFailed,
        SyncListenerMustNotBeQueuedError,
        SyncSession,
        SyncSettings,
        build_definitions,
        listener,
        reduce_by_max,
    )

    assert set(integrations_dagster.__all__) <= set(dir(integrations_dagster))
    assert reduce_by_max(["2024-01-02T00:00:00Z", None, "2024-01-10T00:00:00Z"]) == "2024-01-10T00:00:00Z"
    assert reduce_by_max([]) is None


def test_bundled_code_location_resolves():
    from integrations_app.definitions import defs

    repo = defs.get_repository_def()
    jobs = {j.name for j in repo.get_all_jobs()}
    for key in ("synthetic", "github", "github_activity", "tether"):
        assert f"{key}_sync" in jobs
        assert repo.has_sensor_def(f"{key}_sync_sensor")
        job = repo.get_job(f"{key}_sync")
        assert job.partitions_def is not None and job.partitions_def.name == f"{key}_integrations"
        assert job.tags["integrations/provider"] == key
    assert {"integrations_skip_item", "integrations_retry_failed_items", "integrations_advance_cursor",
            "integrations_prune"} <= jobs
    assert repo.has_schedule_def("integrations_prune_daily")
    # issue 13: the bundled Tether provider pushes: its push sensor and the mutation operator jobs
    assert repo.has_sensor_def("tether_push_sensor") and not repo.has_sensor_def("github_push_sensor")
    assert {"integrations_retry_mutations", "integrations_skip_mutation"} <= jobs
    from dagster import AssetKey

    assert AssetKey(["integrations", "github"]) in {s.key for s in repo.assets_defs_by_key.values()} or \
        repo.asset_graph.has(AssetKey(["integrations", "github"]))


def test_every_partition_run_carries_the_integration_tag():
    """UI launches included: dagster.yaml's one-run-per-integration limit keys on this tag."""
    from integrations_app.definitions import defs

    job = defs.get_repository_def().get_job("github_sync")
    tags = job.partitioned_config.get_tags_for_partition_key("7")
    assert tags["integrations/integration_id"] == "7" and tags["integrations/provider"] == "github"
