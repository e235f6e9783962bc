"""GitHub benchmark: issues/s, requests and peak RSS syncing from the fake API into ``github_issues``.

    .venv/bin/python bench/github.py                      # 10,000 and 100,000 issues (3 runs each) + rate limiter
    .venv/bin/python bench/github.py --sizes 10000 --no-limiter --repeat 1
    .venv/bin/python bench/github.py --sizes 100000 --only-peers --no-peers --no-limiter --declarative  # coded vs configured

Each scenario runs in its own process against a scratch PostgreSQL database (``bench_github``) and a
fresh fake GitHub server with the same issues: the framework through the real Dagster ``github_sync``
job (staged listener, chunks of 10,000), and beside it a hand-written httpx loop that pages through
the same server and upserts each page with one ``INSERT ... ON CONFLICT`` (what a competent engineer
writes). The rate-limiter part runs a sync under a small budget and checks, from the server's own
receipt times, that no window of the budget's period ever saw more than N requests and that the
budget was used.

Peers, whole processes (``--peers``, on when ``bench/.venv-dlt`` exists: ``bash bench/setup-dlt.sh``): on
one fake GitHub per size, ``integrations sync ID --wait`` (the CLI, default definitions) beside dlt 1.31's
``rest_api`` source (``bench/dlt_github.py``, merge on the issue id, ``since`` incremental), each first a
full sync, then three rounds of runs that find nothing new (one request), cold CLI, dlt and the warm
server in turn, each after a one-second pause (the steady state of a fleet's incremental syncs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import drop_database, fresh_database, peak_rss_mb, print_table, run_child  # noqa: E402

DB = os.environ.get("INTEGRATIONS_BENCH_DB", "bench_github")  # scratch database (dropped at the end)
TOKEN = "bench-token"


def make_defs(database_url: str, chunk_size: int | None = None, declarative: bool = False):  # type: ignore[no-untyped-def]
    from integrations_dagster import SyncSettings, build_definitions
    from providers.github import GitHubProvider, upsert_github_issues

    providers: list = [GitHubProvider()]
    listeners: list = [upsert_github_issues]
    if declarative:  # GitHub issues written as configuration (providers/github/issues.yaml)
        from providers.github.rest import github_issues_rest

        rest = github_issues_rest()
        providers.append(rest)
        listeners.append(rest.listener)
    return build_definitions(
        providers=providers,
        listeners=listeners,
        settings=SyncSettings(database_url=database_url, max_items_per_batch=10**9,
                              **({"chunk_size": chunk_size} if chunk_size else {})),  # default: the provider's 5,000
        sensors=False,
        operator_jobs=False,
    )


class FakeServer:
    """The fake GitHub in its own process, so it does not share this process's GIL or memory."""

    def __init__(self, issues: int) -> None:
        import socket
        import subprocess

        port = int(os.environ.get("INTEGRATIONS_BENCH_PORT") or 0)  # a fixed port (shared machines), else a free one
        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            # One server serves every repeat of a size (peers: about 4,000 requests per repeat at 100,000
            # issues), so GitHub's 5,000 requests an hour would run out in the second repeat.
            [sys.executable, "-m", "providers.github.fake_api", "--port", str(port), "--issues", str(issues),
             "--token", TOKEN, "--rate-limit", str(10 ** 9)], stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "fake GitHub serving ..." once listening
        self.url, self.owner, self.repo = f"http://127.0.0.1:{port}", "acme", "widgets"

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    @property
    def request_times(self) -> list[float]:
        import httpx

        return httpx.get(f"{self.url}/_fake/requests").json()["times"]


def child_framework(url: str, issues: int, rate_limit: str | None = None, provider_key: str = "github") -> dict:
    from dagster import DagsterInstance

    from integrations_dagster import DefinitionsRef, Store, execute_sync

    os.environ["INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS"] = "1"
    store = Store.for_url(url)
    declarative = provider_key != "github"
    ref = DefinitionsRef("bench.github", "make_defs", {"database_url": url, "declarative": declarative})
    ref.load()
    if declarative:  # its destination table is created by its migration (`integrations rest migrate`)
        from integrations_dagster.declarative import migrate_destinations
        from providers.github.rest import github_issues_rest

        migrate_destinations(store, github_issues_rest())
    with FakeServer(issues) as fake, tempfile.TemporaryDirectory() as home:
        limit = json.loads(rate_limit) if rate_limit else None
        integ = store.create_integration(
            provider_key=provider_key, name="bench", credentials={"token": TOKEN}, rate_limit=limit,
            metadata={"owner": fake.owner, "repo": fake.repo, "base_url": fake.url, "since": "2000-01-01T00:00:00Z"},
        )
        os.environ["DAGSTER_HOME"] = home
        with DagsterInstance.get() as instance:
            t0 = time.perf_counter()
            run = execute_sync(ref, provider_key, integ.id, instance=instance, log_level="ERROR")
            seconds = time.perf_counter() - t0
        times = list(getattr(fake, "request_times", []))
    sr = store.runs_for_integration(integ.id, limit=1)[0]
    assert run.status.value == "SUCCESS" and sr["success_count"] == issues, (run.status, sr)
    return {"seconds": seconds, "rss_mb": peak_rss_mb(), "requests": sr["request_count"], "times": times}


def _pages(fake: Any) -> Iterator[list[dict]]:
    """The hand loop's walk: every page of the fake's issues, following the Link header."""
    import httpx

    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        next_url: str | None = f"{fake.url}/repos/{fake.owner}/{fake.repo}/issues"
        params: dict | None = {"since": "2000-01-01T00:00:00Z", "state": "all", "sort": "updated",
                               "direction": "asc", "per_page": 100}
        while next_url:
            resp = client.get(next_url, params=params)
            resp.raise_for_status()
            yield resp.json()
            next_url = resp.links.get("next", {}).get("url")
            params = None


def child_loop(url: str, issues: int, fake_url: str | None = None) -> dict:
    from sqlalchemy import create_engine

    from integrations_dagster import Store
    from providers.github.tables import GITHUB_TABLES, github_issues

    Store.for_url(url).ensure_provider_tables(GITHUB_TABLES)  # same schema, no tracking used
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    from providers.github.common import pg_upsert  # one multi-row INSERT ... ON CONFLICT per page
    import contextlib
    from types import SimpleNamespace

    with (contextlib.nullcontext(SimpleNamespace(url=fake_url, owner="acme", repo="widgets")) if fake_url
          else FakeServer(issues)) as fake:
        t0 = time.perf_counter()
        requests = 0
        for page in _pages(fake):
            requests += 1
            rows = [
                {"integration_id": 1, "issue_id": i["id"], "number": i["number"], "title": i["title"],
                 "state": i["state"], "user_login": (i.get("user") or {}).get("login"),
                 "labels": [lbl["name"] for lbl in i.get("labels", [])], "created_at": i["created_at"],
                 "updated_at": i["updated_at"], "html_url": i.get("html_url"), "raw": i}
                for i in page
            ]
            if rows:
                with engine.begin() as conn:
                    pg_upsert(conn.connection.driver_connection, github_issues, rows,
                              ["integration_id", "issue_id"])
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rss_mb": peak_rss_mb(), "requests": requests}


def child_floor(url: str, issues: int) -> dict:
    """The floor: walk every page with no database work, then COPY all rows into a temp table and merge."""
    import psycopg

    from integrations_dagster import Store
    from providers.github.tables import GITHUB_TABLES, github_issues

    Store.for_url(url).ensure_provider_tables(GITHUB_TABLES)
    with FakeServer(issues) as fake:
        rows: list[dict] = []
        t0 = time.perf_counter()
        for page in _pages(fake):
            rows.extend(page)
        walk = time.perf_counter() - t0
    cols = [c.name for c in github_issues.columns]
    t1 = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE TEMP TABLE stage (LIKE "{github_issues.name}") ON COMMIT DROP')
        with cur.copy(f"COPY stage ({', '.join(cols)}) FROM STDIN") as copy:
            for i in rows:
                rec = {"integration_id": 1, "issue_id": i["id"], "number": i["number"], "title": i["title"],
                       "state": i["state"], "user_login": (i.get("user") or {}).get("login"),
                       "labels": json.dumps([lbl["name"] for lbl in i.get("labels", [])]),
                       "created_at": i["created_at"], "updated_at": i["updated_at"], "html_url": i.get("html_url"),
                       "raw": json.dumps(i)}
                copy.write_row([rec.get(c) for c in cols])
        updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in cols if c not in ("integration_id", "issue_id"))
        cur.execute(f'INSERT INTO "{github_issues.name}" SELECT * FROM stage '
                    f'ON CONFLICT (integration_id, issue_id) DO UPDATE SET {updates}')
        assert cur.rowcount == issues, cur.rowcount
    merge = time.perf_counter() - t1
    return {"walk": walk, "merge": merge, "pages": -(-issues // 100)}


def limiter(url: str, limit: int, period: float, issues: int) -> list[list[str]]:
    out = run_child(__file__, "framework", url, str(issues), json.dumps({"limit": limit, "period_seconds": period}))
    times = sorted(out["times"])
    worst = max(sum(1 for t in times if s <= t < s + period) for s in times)
    full = int((times[-1] - times[0]) // period)
    per_window = [sum(1 for t in times if times[0] + k * period <= t < times[0] + (k + 1) * period) for k in range(full)]
    use = sum(per_window) / (limit * full) if full else 0.0
    return [[f"{limit} per {period:g} s", str(len(times)), f"{out['seconds']:.1f}", str(worst),
             "yes" if worst <= limit else "NO", f"{use:.1%}", "yes" if use >= 0.95 else "NO"]]


DLT_PY = Path(__file__).resolve().parent / ".venv-dlt" / "bin" / "python"
CLI = Path(sys.executable).parent / "integrations"


#: No-change rounds per repeat (cold CLI, dlt, warm server in turn) and the pause before each run.
NO_CHANGE_ROUNDS = 3
NO_CHANGE_PAUSE = 1.0


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} exit {proc.returncode}:\n{proc.stderr[-3000:]}\n{proc.stdout[-3000:]}")
    return elapsed


def _peer_db(n: int, k: int) -> str:
    return f"{DB}_peer_{n}_{k}"


class SyncServer:
    """``integrations serve`` for one peer repeat (started after the cold runs, stopped at the end)."""

    def __init__(self, env: dict[str, str]) -> None:
        import subprocess

        self.proc = subprocess.Popen([str(CLI), "serve"], env=env, cwd=Path(__file__).resolve().parents[1],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"integrations serve did not start: {line!r}")

    def __enter__(self) -> SyncServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def peers(n: int, repeat: int, dagster_storage: str = "sqlite") -> list[list[str]]:
    """Whole processes on one fake GitHub of ``n`` issues: the CLI's full and no-change sync, cold (a fresh
    ``integrations`` process that imports Dagster) and through a warm ``integrations serve``, beside dlt's
    and the hand loop's whole process. Cold and warm sync their own integration (same issues)."""
    import statistics

    import psycopg

    from integrations_dagster import Store

    root = Path(__file__).resolve().parents[1]
    kinds = ["cli full", "warm full", "dlt full", "loop full", "cli none", "warm none", "dlt none"]
    times: dict[str, list[float]] = {k: [] for k in kinds}

    def note(key: str, seconds: float) -> None:  # as it happens, so an interrupted run still shows its figures
        times[key].append(seconds)
        print(f"peers {n} {key}: {seconds:.2f} s", file=sys.stderr, flush=True)

    with FakeServer(n) as fake:
        for k in range(repeat):
            # A database per repeat: ``Store.for_url`` keeps one migrated store per URL in this process, so
            # re-creating the same database would leave the cached store pointing at a database without
            # its tables (the repeat >= 2 failure). Each is dropped at the end (``main``'s ``finally``).
            url = fresh_database(_peer_db(n, k))
            with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as pipes:
                # The instance settings the project ships (dagster.yaml: what the README's demo installs).
                shipped = (root / "dagster.yaml").read_text()
                if dagster_storage == "postgres":  # its `storage:` block (the last) replaced, as the README says
                    dagster_url = fresh_database(_peer_db(n, k) + "_dagster")
                    shipped = shipped[:shipped.index("\nstorage:\n") + 1] + (
                        "storage:\n  postgres:\n    postgres_url: "
                        f"{dagster_url.replace('postgresql://', 'postgresql+psycopg2://', 1)}\n")
                Path(home, "dagster.yaml").write_text(shipped)
                env = {**os.environ, "PYTHONPATH": str(root), "DAGSTER_DISABLE_TELEMETRY": "yes",
                       "DAGSTER_HOME": home, "INTEGRATIONS_DATABASE_URL": url,
                       "INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS": "1"}
                os.environ["INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS"] = "1"
                store = Store.for_url(url)
                meta = {"owner": fake.owner, "repo": fake.repo, "base_url": fake.url, "since": "2000-01-01T00:00:00Z"}
                cold = store.create_integration(provider_key="github", name="cold", credentials={"token": TOKEN},
                                                metadata=meta)
                warm = store.create_integration(provider_key="github", name="warm", credentials={"token": TOKEN},
                                                metadata=meta)
                store.engine.dispose()
                cli = [str(CLI), "sync", str(cold.id), "--wait", "--json"]
                via_server = [str(CLI), "sync", str(warm.id), "--wait", "--json"]
                dlt = [str(DLT_PY), str(Path(__file__).resolve().parent / "dlt_github.py"), fake.url, fake.owner,
                       fake.repo, TOKEN, url.replace("postgres@", "postgres:trust@", 1), pipes]  # dlt wants one
                loop = [sys.executable, __file__, "--child", "loop-process", url, str(n), fake.url]
                cold_env = {**env, "INTEGRATIONS_USE_SYNC_SERVER": "0"}  # the cold CLI runs its sync itself
                note("cli full", _timed(cli, cold_env))
                note("dlt full", _timed(dlt, env))
                note("loop full", _timed(loop, env))
                with SyncServer(env):
                    note("warm full", _timed(via_server, env))
                    # No-change syncs in their steady state, as a fleet runs them: alternating rounds, each
                    # run after a pause (not on the heels of its own full sync's background work).
                    for _ in range(NO_CHANGE_ROUNDS):
                        for key, cmd, cmd_env in (("cli none", cli, cold_env), ("dlt none", dlt, env),
                                                  ("warm none", via_server, env)):
                            time.sleep(NO_CHANGE_PAUSE)
                            note(key, _timed(cmd, cmd_env))
                with psycopg.connect(url) as conn:
                    counts = dict(conn.execute("SELECT integration_id, count(*) FROM github_issues "
                                               "GROUP BY integration_id").fetchall())
                    theirs = conn.execute("SELECT count(*) FROM dlt_github.github_issues").fetchone()[0]
                    served = conn.execute("SELECT count(*) FROM sync_runs WHERE integration_id = %s",
                                          (warm.id,)).fetchone()[0]
                assert counts.get(cold.id) == counts.get(warm.id) == theirs == n, (counts, theirs, n)
                assert served == 1 + NO_CHANGE_ROUNDS, served  # every warm sync ran (through the server)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    labels = {"cli": "integrations sync ID --wait (cold process)", "warm": "integrations sync ID --wait "
              "(warm `integrations serve`)", "dlt": "dlt rest_api (dlt 1.31)", "loop": "hand-written httpx loop"}
    for kind, label in (("full", "full sync"), ("none", "no-change sync (1 request)")):
        d = med[f"dlt {kind}"]
        for who in ("cli", "warm", "dlt", "loop"):
            key = f"{who} {kind}"
            if key not in med:
                continue
            c = med[key]
            runs = ", ".join(f"{a / b:.2f}" for a, b in zip(times[key], times[f"dlt {kind}"]))
            vs_loop = f"{c / med['loop full']:.2f}x" if kind == "full" else "-"
            rows.append([f"{n:,}", label, labels[who], f"{c:.2f}",
                         "1.00x" if who == "dlt" else f"{c / d:.2f}x (runs: {runs})", vs_loop])
    return rows


def _median(runs: list[dict]) -> dict:
    """The run with the median wall time (its RSS and request count come with it)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--no-limiter", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario; the table shows medians")
    parser.add_argument("--peers", action=argparse.BooleanOptionalAction, default=DLT_PY.exists(),
                        help="whole-process CLI vs dlt (full and no-change); needs bash bench/setup-dlt.sh")
    parser.add_argument("--floor", action="store_true", help="also the floor: page walk alone, COPY + merge alone")
    parser.add_argument("--dagster-storage", choices=["sqlite", "postgres"], default="sqlite",
                        help="peers: the Dagster instance's storage (default SQLite under DAGSTER_HOME)")
    parser.add_argument("--only-peers", action="store_true", help="skip the in-process framework/loop table")
    parser.add_argument("--declarative", action="store_true",
                        help="also GitHub issues as configuration (providers/github/issues.yaml) beside the coded provider")
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child:
        kind, url, issues, *rest = args.child
        if kind == "framework":
            out = child_framework(url, int(issues), rest[0] if rest else None)
        elif kind == "declarative":
            out = child_framework(url, int(issues), None, provider_key="github_issues_rest")
        elif kind == "floor":
            out = child_floor(url, int(issues))
        elif kind == "loop-process":  # the peers' whole-process loop, on the peers' fake server
            out = child_loop(url, int(issues), fake_url=rest[0])
        else:
            out = child_loop(url, int(issues))
        print(json.dumps(out))
        return
    rows = []
    sizes = [int(s) for s in args.sizes.split(",")]
    try:
        for n in [] if args.only_peers else sizes:
            loops, fws = [], []
            for _ in range(args.repeat):  # alternating, so drift on a shared machine hits both alike
                loops.append(run_child(__file__, "loop", fresh_database(DB), str(n)))
                fws.append(run_child(__file__, "framework", fresh_database(DB), str(n)))
            loop, fw = _median(loops), _median(fws)
            spread = ", ".join(f"{f['seconds'] / lp['seconds']:.2f}" for f, lp in zip(fws, loops))
            rows.append([f"{n:,}", "framework (Dagster job)", f"{fw['seconds']:.2f}", f"{n / fw['seconds']:,.0f}",
                         str(fw["requests"]), f"{fw['rss_mb']:.0f}",
                         f"{fw['seconds'] / loop['seconds']:.2f}x (runs: {spread})"])
            rows.append([f"{n:,}", "hand-written httpx loop", f"{loop['seconds']:.2f}",
                         f"{n / loop['seconds']:,.0f}", str(loop["requests"]), f"{loop['rss_mb']:.0f}", "1.00x"])
        if rows:
            print_table(["issues", "scenario", "wall s", "issues/s", "requests", "peak RSS MB", "vs loop"], rows)
        if args.declarative:
            print()
            drows = []
            for n in sizes:
                coded, conf = [], []
                for _ in range(args.repeat):  # alternating, same run, same machine state
                    coded.append(run_child(__file__, "framework", fresh_database(DB), str(n)))
                    conf.append(run_child(__file__, "declarative", fresh_database(DB), str(n)))
                c, d = _median(coded), _median(conf)
                spread = ", ".join(f"{x['seconds'] / y['seconds']:.2f}" for x, y in zip(conf, coded))
                drows.append([f"{n:,}", "coded (providers/github/issues.py)", f"{c['seconds']:.2f}",
                              f"{n / c['seconds']:,.0f}", str(c["requests"]), f"{c['rss_mb']:.0f}", "1.00x"])
                drows.append([f"{n:,}", "configured (providers/github/issues.yaml)", f"{d['seconds']:.2f}",
                              f"{n / d['seconds']:,.0f}", str(d["requests"]), f"{d['rss_mb']:.0f}",
                              f"{d['seconds'] / c['seconds']:.2f}x (runs: {spread})"])
            print_table(["issues", "provider", "wall s", "issues/s", "requests", "peak RSS MB", "vs coded"], drows)
        if args.floor:
            import statistics

            print()
            frows = []
            for n in sizes:
                fl = [run_child(__file__, "floor", fresh_database(DB), str(n)) for _ in range(args.repeat)]
                frows.append([f"{n:,}", str(fl[0]["pages"]), f"{statistics.median(f['walk'] for f in fl):.2f}",
                              f"{statistics.median(f['merge'] for f in fl):.2f}"])
            print_table(["issues", "pages", "floor: walk pages, no DB (s)", "floor: COPY + merge (s)"], frows)
        if args.peers:
            print()
            print_table(["issues", "sync", "whole process", "wall s (median)", "vs dlt", "vs loop"],
                        [r for n in sizes for r in peers(n, args.repeat, args.dagster_storage)])
        if not args.no_limiter and not args.only_peers:
            print()
            print_table(["budget", "requests", "wall s", "max in any window", "never over", "budget used",
                         ">= 95%"], limiter(fresh_database(DB), 40, 2.0, 30000))
    finally:
        drop_database(DB)
        if args.peers:
            for n in sizes:
                for k in range(args.repeat):
                    drop_database(_peer_db(n, k))
                    drop_database(_peer_db(n, k) + "_dagster")


if __name__ == "__main__":
    main()
