"""Everything that imports Dagster: definitions, jobs, sensors, asset checks, operator jobs, the
resource, and launching runs (in-process, queued, re-executed from failure).

Modules here import Dagster at the top, except ``code_location`` (Dagster only when it builds real
``Definitions``): the CLI's fast verbs import nothing else from this package."""
