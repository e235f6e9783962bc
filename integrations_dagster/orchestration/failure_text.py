"""The text a failed chunk step shows in the Dagster UI (and the CLI): which items failed, and why.

A pure function of the failed items: one short line per item (item id, external id, the first line
of its error, truncated), at most ``MAX_LISTED`` of them, then what to do. The same facts go into the
``Failure``'s metadata (a Markdown table and the item ids) so the UI shows them without anyone
reading a stack trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_LISTED = 10
MAX_ERROR_CHARS = 160
MAX_IDS_IN_METADATA = 100


def short_error(error: str | None, width: int = MAX_ERROR_CHARS) -> str:
    """The first non-empty line of ``error``, at most ``width`` characters."""
    lines = [ln.strip() for ln in str(error or "").splitlines() if ln.strip()]
    text = lines[0] if lines else "(no error message)"
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True)
class ChunkFailure:
    integration_id: int | str
    sync_run_id: int
    chunk: int
    failed_items: Sequence[tuple[int, str | None, str | None]]  # (item id, external id, error)
    failed: int
    succeeded: int
    tries: int

    def description(self) -> str:
        n = self.failed
        head = (f"{n} item{'s' if n != 1 else ''} of chunk {self.chunk} failed after {self.tries} "
                f"tr{'ies' if self.tries != 1 else 'y'} (sync run {self.sync_run_id}, integration "
                f"{self.integration_id}); the cursor holds before {'them' if n != 1 else 'it'}.")
        lines = [head]
        for item_id, external_id, error in list(self.failed_items)[:MAX_LISTED]:
            lines.append(f"  item {item_id} (external id {external_id}): {short_error(error)}")
        more = n - min(len(self.failed_items), MAX_LISTED)
        if more > 0:
            lines.append(f"  ... and {more} more: integrations list-failed-items --integration {self.integration_id}")
        lines.append("Fix the cause, then Re-execute this run From failure (or `integrations retry "
                     f"{self.integration_id}`); to give up on an item: integrations skip-sync-item ITEM_ID.")
        return "\n".join(lines)

    def metadata(self) -> dict[str, Any]:
        from dagster import MetadataValue

        rows = ["| item id | external id | error |", "| --- | --- | --- |"]
        for item_id, external_id, error in list(self.failed_items)[:MAX_LISTED]:
            cell = short_error(error).replace("|", "\\|")
            rows.append(f"| {item_id} | {str(external_id).replace('|', chr(92) + '|')} | {cell} |")
        return {
            "sync_run_id": self.sync_run_id,
            "integration_id": MetadataValue.text(str(self.integration_id)),
            "failed": self.failed,
            "succeeded": self.succeeded,
            "failed_item_ids": MetadataValue.json([i for i, _, _ in list(self.failed_items)[:MAX_IDS_IN_METADATA]]),
            "failed_items": MetadataValue.md("\n".join(rows)),
        }
