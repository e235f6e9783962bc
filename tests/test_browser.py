"""Browser tests: the flows users rely on, driven in headless Chromium against a real ``dagster dev``.

One ``dagster dev`` (webserver, daemon, code server) per module, on a temporary ``DAGSTER_HOME`` with the
project's dagster.yaml, a free port and the code location ``tests.support.browser_app`` (the synthetic
provider; a listener that fails on the poisoned item until the test creates the "fixed" flag file; state
on SQLite in the temporary folder). Playwright drives Debian's Chromium (``/usr/bin/chromium``;
``scripts/test.sh`` installs both). The flows build on each other (a story: the poisoned run of (b) is
re-executed in (c)), so one test runs them in order on one server, each flow in a fresh browser context;
a failure names the flow. (One test, not one per flow: pytest-xdist could otherwise hand the flows to
different workers, and its ``xdist_group`` grouping does not work with pytest 9.)

Screenshots go to ``<tmp>/screenshots`` (the path is printed) and, when ``INTEGRATIONS_SCREENSHOTS_DIR``
is set, are copied there too (that is how ``docs/screenshots/`` was made).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from integrations_dagster import Store
from tests.support import open_instance

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("INTEGRATIONS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-quic", "--no-first-run", "--disable-sync"]
LOCATION = "tests.support.browser_app:defs"
JOB = "synthetic_sync"
ITEMS = 30  # chunk_size 10 in the app: three chunks
POISONED = "item-15"  # in chunk 1
MAX_CURSOR = f"{ITEMS - 1:08d}"
RUN_TIMEOUT_MS = 120_000  # a daemon-launched run starts a fresh interpreter: seconds on a busy 2-core machine
UI_TIMEOUT_MS = 30_000


@dataclass
class Server:
    url: str
    home: Path
    db_url: str
    fixed_flag: Path
    shots: Path
    log: Path
    clean_id: int
    poisoned_id: int
    story: dict[str, Any] = field(default_factory=dict)

    def store(self) -> Store:
        return Store.for_url(self.db_url)

    def instance(self):  # type: ignore[no-untyped-def]

        return open_instance(str(self.home))

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
        resp.raise_for_status()
        body = resp.json()
        assert "errors" not in body, body
        return body["data"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until_loaded(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """The webserver answers and the code location has loaded (its job is in the workspace)."""
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename " \
            "... on PythonError { message } } } } } }"
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster dev exited with {proc.returncode}:\n{_log_tail(log)}")
        try:
            data = httpx.post(f"{url}/graphql", json={"query": query}, timeout=5).json()["data"]
            entries = data["workspaceOrError"]["locationEntries"]
            kinds = {e["name"]: e["locationOrLoadError"] for e in entries}
            loaded = kinds.get(LOCATION) or {}
            if loaded.get("__typename") == "RepositoryLocation":
                return
            if loaded.get("__typename") == "PythonError":
                pytest.fail(f"the test code location failed to load: {loaded.get('message')}")
            last = json.dumps(kinds)
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            last = repr(exc)
        time.sleep(0.5)
    pytest.fail(f"dagster dev did not load {LOCATION} within {timeout:.0f} s ({last}):\n{_log_tail(log)}")


def _stop(proc: subprocess.Popen) -> None:
    """End the whole process group: webserver, daemon, code servers and any run workers (they linger)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the code servers outlive the parent for 30-45 s otherwise
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from integrations_dagster.orchestration.in_process import ensure_partition

    tmp = tmp_path_factory.mktemp("browser")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    db_url = f"sqlite:///{tmp}/integrations.sqlite"
    store = Store.for_url(db_url)
    clean = store.create_integration(provider_key="synthetic", name="browser: clean", metadata={"items": ITEMS})
    poisoned = store.create_integration(provider_key="synthetic", name="browser: one poisoned item",
                                        metadata={"items": ITEMS, "fail_external_ids": [POISONED]})

    with open_instance(str(home)) as instance:
        for integ in (clean, poisoned):
            ensure_partition(instance, "synthetic", integ.id)
    workspace = tmp / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: tests.support.browser_app\n      attribute: defs\n"
        f"      working_directory: {ROOT}\n"
    )
    shots = tmp / "screenshots"
    shots.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DAGSTER_HOME=str(home), INTEGRATIONS_DATABASE_URL=db_url, DAGSTER_DISABLE_TELEMETRY="yes",
               BROWSER_APP_FIXED_FILE=str(tmp / "listener-fixed"),
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    log = tmp / "dagster-dev.log"
    dagster = Path(sys.executable).parent / "dagster"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(dagster), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
            cwd=str(tmp), env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so teardown ends every child
        )
    try:
        _wait_until_loaded(url, proc, log)
        print(f"\nbrowser tests: dagster dev at {url}, screenshots in {shots}")
        yield Server(url=url, home=home, db_url=db_url, fixed_flag=tmp / "listener-fixed", shots=shots, log=log,
                     clean_id=clean.id, poisoned_id=poisoned.id)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `bash scripts/install-chromium.sh` (as root it installs "
                    "Debian's chromium) or `apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def _page(browser: Any, server: Server, name: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    # Dagster's "join the community" dialog covers the first page a new browser opens: mark it seen.
    context.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
    pg = context.new_page()
    pg.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield pg
    finally:
        _shot(server, pg, f"end-{name}", publish=False)  # what the page showed last (useful after a failure)
        context.close()


def _shot(server: Server, page: Any, name: str, *, full_page: bool = False, publish: bool = True) -> Path:
    path = server.shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    extra = os.environ.get("INTEGRATIONS_SCREENSHOTS_DIR")
    if extra and publish:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


def _launch_from_launchpad(server: Server, page: Any, partition: int) -> str:
    """Open the job's Launchpad, pick the partition, launch; returns the new run id (the UI opens its page)."""
    page.goto(f"{server.url}/locations/{LOCATION}/jobs/{JOB}/playground")
    page.get_by_placeholder("Partition").click()
    page.get_by_role("menuitem", name=str(partition), exact=True).click()
    # The partition's tags (integration and provider) fill in once the partition is chosen.
    page.get_by_text(f"integrations/integration_id: {partition}").wait_for()
    _shot(server, page, f"launchpad-partition-{partition}")
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


def _wait_for_status(page: Any, status: str) -> None:
    """The run page's status tag reads ``status`` (the page polls the server while the run goes)."""
    page.get_by_text(status, exact=True).first.wait_for(timeout=RUN_TIMEOUT_MS)


def _colour_of(page: Any, text: str) -> tuple[int, int, int]:
    """The background colour of the nearest coloured box around the element whose text is ``text``
    (``page`` may be any locator to search in)."""
    rgb = page.get_by_text(text, exact=True).first.evaluate(
        """el => { for (let e = el; e; e = e.parentElement) {
               const c = getComputedStyle(e).backgroundColor;
               if (c && c !== 'transparent' && !c.startsWith('rgba(0, 0, 0, 0')) return c; }
             return ''; }"""
    )
    parts = [int(float(x)) for x in re.findall(r"[\d.]+", rgb)[:3]]
    assert len(parts) == 3, f"no background colour around {text!r}: {rgb!r}"
    return parts[0], parts[1], parts[2]


def flow_a_partition_launched_from_the_launchpad_syncs(server: Server, page: Any) -> None:
    run_id = _launch_from_launchpad(server, page, server.clean_id)
    _wait_for_status(page, "Success")
    page.get_by_text(f"partition: {server.clean_id}").wait_for()
    # The run's sync result is in its event log: the materialisation of the integration's partition.
    page.get_by_placeholder("Filter…").fill("type:ASSET_MATERIALIZATION")
    page.get_by_text(re.compile(r"sync run \d+: success")).first.wait_for()
    page.get_by_role("button", name="View full message").first.click()  # the metadata, not cut off
    message = page.get_by_role("dialog")
    message.get_by_text(f'"{MAX_CURSOR}"', exact=True).wait_for()  # cursor_after: the last item's checkpoint
    page.wait_for_timeout(500)  # the dialog fades in
    _shot(server, page, "a-launchpad-run-success")
    with server.instance() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status.value == "SUCCESS"
        assert run.tags["dagster/partition"] == str(server.clean_id)
        assert run.tags["integrations/integration_id"] == str(server.clean_id)
    store = server.store()
    sync_run = store.run_for_dagster_run(run_id)
    assert sync_run is not None
    assert (sync_run["status"], sync_run["items_total"], sync_run["success_count"]) == ("success", ITEMS, ITEMS)
    assert store.get_integration(server.clean_id).cursor == MAX_CURSOR
    server.story["clean_run"] = run_id


def flow_b_run_with_a_poisoned_item_shows_red_and_names_the_item(server: Server, page: Any) -> None:
    run_id = _launch_from_launchpad(server, page, server.poisoned_id)
    _wait_for_status(page, "Failure")
    r, g, b = _colour_of(page, "Failure")
    assert r > g + 20 and r > b + 20, f"the Failure tag is not red: rgb({r}, {g}, {b})"
    # The failed step's event names the item, its external id and the listener's error.
    page.get_by_placeholder("Filter…").fill("type:STEP_FAILURE")
    page.get_by_text(re.compile(r"1 item.* of chunk 1 failed")).first.wait_for()
    page.get_by_text(re.compile(rf"external id {POISONED}\): .*listener cannot store {POISONED}")).first.wait_for()
    _shot(server, page, "b-poisoned-run-failure")
    with server.instance() as instance:
        assert instance.get_run_by_id(run_id).status.value == "FAILURE"
    store = server.store()
    failed = store.failed_items(integration_id=server.poisoned_id)
    assert [i["external_id"] for i in failed] == [POISONED]
    assert store.get_integration(server.poisoned_id).cursor == f"{int(POISONED.split('-')[1]) - 1:08d}"
    server.story["failed_run"] = run_id
    server.story["sync_run"] = store.run_for_dagster_run(run_id)["id"]


def flow_e1_health_checks_are_red_while_the_poisoned_item_holds_the_cursor(server: Server, page: Any) -> None:
    _checks_show(server, page, passed=False, shot="e-checks-red")
    # The history of the failing check keeps the failure (with the item) as well as the earlier pass.
    _check_panel(server, page, "no_failed_items_holding_cursor")
    page.get_by_role("tab", name="Execution history").click()
    page.get_by_text(re.compile(rf"\(external id {POISONED}\): ValueError")).first.wait_for()


def flow_c_reexecute_from_failure_runs_only_the_failed_chunk_and_the_reconcile(server: Server, page: Any) -> None:
    parent = server.story["failed_run"]
    server.fixed_flag.write_text("the listener is fixed\n")  # the operator fixes the cause ...
    page.goto(f"{server.url}/runs/{parent}")  # ... and re-executes the failed run from its page
    main = page.get_by_role("button", name="Re-execute all (*)")
    main.wait_for()
    main.locator("xpath=following::button[1]").click()  # the arrow beside it opens the strategies
    page.get_by_role("menuitem", name="From failure").click()
    page.wait_for_url(lambda url: "/runs/" in url and parent not in url)
    child = page.url.rsplit("/", 1)[1]
    _wait_for_status(page, "Success")
    page.get_by_text("Re-executions (1)").wait_for()
    _shot(server, page, "c-reexecuted-from-failure")
    from dagster import DagsterEventType

    expected = {"synthetic_process_chunk[chunk_1]", "synthetic_reconcile"}
    with server.instance() as instance:
        run = instance.get_run_by_id(child)
        assert run.status.value == "SUCCESS"
        assert run.parent_run_id == parent and run.root_run_id == parent
        assert run.tags["dagster/partition"] == str(server.poisoned_id)
        assert set(run.step_keys_to_execute or []) == expected
        started = {e.step_key for e in instance.all_logs(child, of_type=DagsterEventType.STEP_START)}
        assert started == expected
    store = server.store()
    assert store.failed_items(integration_id=server.poisoned_id) == []
    integration = store.get_integration(server.poisoned_id)
    assert integration.cursor == MAX_CURSOR
    sync_run = store.runs_for_integration(server.poisoned_id, limit=1)[0]
    assert (sync_run["status"], sync_run["success_count"], sync_run["failed_count"]) == ("success", ITEMS, 0)
    server.story["child_run"] = child


def flow_e2_health_checks_turn_green_after_the_reexecution(server: Server, page: Any) -> None:
    _checks_show(server, page, passed=True, shot="e-checks-green")
    _check_panel(server, page, "no_failed_items_holding_cursor")
    page.get_by_role("tab", name="Execution history").click()
    results = page.locator("table").get_by_text(re.compile(r"^(Passed|Failed)$"))
    results.first.wait_for()
    history = results.all_inner_texts()  # newest first: green now, red before
    assert history[0] == "Passed" and "Failed" in history[1:], history
    _shot(server, page, "e-check-history-red-then-green")


def flow_d_asset_timeline_shows_the_runs_of_one_integration(server: Server, page: Any) -> None:
    partition = server.poisoned_id
    page.goto(f"{server.url}/assets/integrations/synthetic?view=partitions&partition={partition}")
    page.get_by_role("button", name=re.compile(r"View all historical events \(\d+\)")).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(f"Historical events for {partition}").wait_for()
    expected = {
        server.story["failed_run"]: {"status": "partial", "cursor_before": "null",
                                     "cursor_after": f'"{int(POISONED.split("-")[1]) - 1:08d}"',
                                     "total": str(ITEMS), "succeeded": str(ITEMS - 1), "failed": "1"},
        server.story["child_run"]: {"status": "success", "cursor_before": "null", "cursor_after": f'"{MAX_CURSOR}"',
                                    "total": str(ITEMS), "succeeded": str(ITEMS), "failed": "0"},
    }
    for run_id, metadata in expected.items():
        row = dialog.get_by_role("row").filter(has=page.get_by_role("link", name=run_id[:8]))
        # The run's status icon: red for the run that failed, green for its re-execution.
        icon = "run_success" if metadata["status"] == "success" else re.compile(r"run_fail")
        row.get_by_role("img", name=icon).wait_for()
        row.get_by_role("img", name="arrow_drop_down").click()  # unfold the materialisation's metadata
        details = row.locator("xpath=following-sibling::tr[1]")
        details.get_by_text(f"sync run {server.story['sync_run']}: {metadata['status']}").wait_for()
        shown = details.locator("tr").evaluate_all(
            "rows => Object.fromEntries(rows.map(r => [...r.cells].map(c => c.innerText.trim())).filter(c => c.length > 1))")
        assert {k: shown.get(k) for k in metadata} == metadata
        _shot(server, page, f"d-timeline-{metadata['status']}")
        row.get_by_role("img", name="arrow_drop_down").click()  # fold it again


def _check_panel(server: Server, page: Any, check: str) -> None:
    """Open the asset's Checks tab and select ``check`` (its overview shows the latest execution)."""
    page.goto(f"{server.url}/assets/integrations/synthetic?view=checks")
    page.get_by_text(check, exact=True).first.click()
    page.get_by_text("Latest execution").wait_for()


def _latest_evaluation(page: Any, check: str, result: str, description: str | re.Pattern[str]) -> None:
    """The selected check's latest execution: ``result`` (Passed/Failed), for the poisoned partition."""
    page.get_by_text(description).first.wait_for()
    box = page.get_by_text("Evaluation result", exact=True).locator("xpath=..")
    box.get_by_text(result, exact=True).wait_for()
    colour = _colour_of(box, result)
    red, green = colour[0] > colour[1] + 20, colour[1] > colour[0] + 20
    assert (red, green) == ((True, False) if result == "Failed" else (False, True)), (check, result, colour)


def _checks_show(server: Server, page: Any, passed: bool, shot: str) -> None:
    partition = server.poisoned_id
    failed_desc = re.compile(rf"1 failed item.* hold the cursor.*\(external id {POISONED}\)")
    for check, bad, good in (
        ("no_failed_items_holding_cursor", failed_desc, "no failed items hold the cursor"),
        ("synced_within_interval", re.compile(r"health is failing after 1 unsuccessful run"), re.compile(r"synced at ")),
    ):
        _check_panel(server, page, check)
        _latest_evaluation(page, check, "Passed" if passed else "Failed", good if passed else bad)
        # The evaluation is the poisoned integration's partition (the partition header, then its value).
        page.get_by_text("Partition", exact=True).locator("xpath=..").get_by_text(str(partition), exact=True).wait_for()
        _shot(server, page, f"{shot}-{check}")


FLOWS: list[Callable[[Server, Any], None]] = [
    flow_a_partition_launched_from_the_launchpad_syncs,
    flow_b_run_with_a_poisoned_item_shows_red_and_names_the_item,
    flow_e1_health_checks_are_red_while_the_poisoned_item_holds_the_cursor,
    flow_c_reexecute_from_failure_runs_only_the_failed_chunk_and_the_reconcile,
    flow_e2_health_checks_turn_green_after_the_reexecution,
    flow_d_asset_timeline_shows_the_runs_of_one_integration,
]


def test_the_flows_users_rely_on_in_the_dagster_ui(browser: Any, server: Server) -> None:  # Chromium first: fail fast
    """(a) Launchpad sync, (b) poisoned run red with the item named, (e) checks red, (c) re-execute from
    failure runs only the failed chunk and the reconcile, (e) checks green, (d) the integration's timeline."""
    for flow in FLOWS:
        with _page(browser, server, flow.__name__) as page:
            flow(server, page)
