"""The GitHub providers: issues (``issues``) and repository activity (``activity``), their
destination tables (``tables``) and a fake GitHub API for tests and the demo (``fake_api``).

``GitHubIssueSynced`` is re-exported here so that items stored as
``providers.github:GitHubIssueSynced`` (before this became a package) still resolve.
"""

from providers.github.activity import GitHubActivityProvider, store_activities
from providers.github.issues import GitHubIssueSynced, GitHubProvider, issue_row, upsert_github_issues

__all__ = ["GitHubActivityProvider", "GitHubIssueSynced", "GitHubProvider", "issue_row", "store_activities",
           "upsert_github_issues"]
