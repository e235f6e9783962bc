"""dlt peer for ``bench/github.py``: dlt's ``rest_api`` source against our fake GitHub, into PostgreSQL.

Runs in the benchmark-only venv (``bash bench/setup-dlt.sh`` -> ``bench/.venv-dlt``), never the product's:

    bench/.venv-dlt/bin/python bench/dlt_github.py BASE_URL OWNER REPO TOKEN PG_URL PIPELINES_DIR

The same request the framework and the hand loop make (``state=all, sort=updated, direction=asc,
per_page=100, since``), Link-header paging, the same columns as ``github_issues`` (labels as JSON),
``merge`` on the issue id, ``since`` incremental on ``updated_at`` kept in dlt's pipeline state under
PIPELINES_DIR, so a second run with the same directory is dlt's incremental no-change sync.
Prints one JSON line: rows loaded by this run.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import dlt
from dlt.sources.rest_api import rest_api_source


def _row(i: dict[str, Any]) -> dict[str, Any]:
    return {"issue_id": i["id"], "number": i["number"], "title": i["title"], "state": i["state"],
            "user_login": (i.get("user") or {}).get("login"), "labels": [lbl["name"] for lbl in i.get("labels", [])],
            "created_at": i["created_at"], "updated_at": i["updated_at"], "html_url": i.get("html_url")}


def main() -> None:
    base, owner, repo, token, pg_url, pipelines_dir = sys.argv[1:7]
    source = rest_api_source({
        "client": {"base_url": base, "auth": {"type": "bearer", "token": token},
                   "paginator": {"type": "header_link"}},
        "resource_defaults": {"primary_key": "issue_id", "write_disposition": "merge"},
        "resources": [{
            "name": "github_issues",
            "endpoint": {
                "path": f"repos/{owner}/{repo}/issues",
                "params": {"state": "all", "sort": "updated", "direction": "asc", "per_page": 100,
                           "since": {"type": "incremental", "cursor_path": "updated_at",
                                     "initial_value": "2000-01-01T00:00:00Z"}},
            },
            "processing_steps": [{"map": _row}],
            "columns": {"labels": {"data_type": "json"}},
        }],
    })
    pipeline = dlt.pipeline(pipeline_name="bench_github", destination=dlt.destinations.postgres(credentials=pg_url),
                            dataset_name="dlt_github", pipelines_dir=pipelines_dir)
    info = pipeline.run(source)
    rows = sum(m.get("github_issues", 0) for m in [pipeline.last_trace.last_normalize_info.row_counts]) \
        if pipeline.last_trace and pipeline.last_trace.last_normalize_info else 0
    print(json.dumps({"rows": rows, "loads": len(info.loads_ids)}))


if __name__ == "__main__":
    main()
