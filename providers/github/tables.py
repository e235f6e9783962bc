"""Tables in the integrations database that applications and providers may read and write.

The framework's own bookkeeping tables stay private; these are the destination tables of the
bundled providers (created by the same migrations).
"""

from integrations_dagster.store.models import activities, github_issues

__all__ = ["activities", "github_issues"]
