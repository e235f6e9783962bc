"""Issue 9 point 3: issues edited while a run pages through GitHub are never missed.

Page-number paging over ``sort=updated`` loses an issue when another one is edited mid-listing: the
edited issue moves to the end, and the issue after the page boundary slides onto the page already
read. ``FakeGitHub.edit_while_listing`` does exactly that, on demand; the provider pages by key
(``SinceKeysetPaginator``) and stores every issue, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest
from dagster import DagsterRunStatus
from sqlalchemy import select

from integrations_dagster import execute_sync
from integrations_dagster.http import ApiClient, LinkHeaderPaginator, SinceKeysetPaginator
from providers.github.fake_api import FakeGitHub
from providers.github.tables import github_issues
from tests.test_github import TOKEN, github, latest, ref

ISSUES = 350


@pytest.fixture(autouse=True)
def _plaintext(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS", "1")


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    with FakeGitHub(issues=ISSUES, token=TOKEN) as server:
        yield server


def in_listing_order(fake: FakeGitHub) -> list[int]:
    """Issue ids as ``sort=updated&direction=asc`` serves them right now."""
    return [fake.issue_id(n) for n in sorted(range(1, fake.issue_count + 1),
                                              key=lambda n: (fake.issue(n)["updated_at"], n))]


def schedule_edits(fake: FakeGitHub) -> list[int]:
    """Edits that each make page-number paging skip issues: three issues of page 1 edited once page 1
    is served, two of page 2 and one of page 4 (not read yet) once page 2 is served."""
    order = in_listing_order(fake)
    first, second = [order[5], order[40], order[99]], [order[120], order[150], order[330]]
    fake.edit_while_listing(first, after_pages=1)
    fake.edit_while_listing(second, after_pages=2)
    return first + second


def walk(fake: FakeGitHub, paginator: Any) -> list[dict[str, Any]]:
    params = {"since": "2000-01-01T00:00:00Z", "state": "all", "sort": "updated", "direction": "asc",
              "per_page": 100}
    with ApiClient(base_url=fake.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        return [raw for raw, _p, _e in api.iter_items(f"/repos/{fake.owner}/{fake.repo}/issues",
                                                      params=params, paginator=paginator)]


def test_the_fake_moves_issues_between_pages_and_page_numbers_lose_them(fake):
    """The old behaviour, reproduced: Link-header (page-number) paging misses the issues that slid
    onto pages already read, although the listing ends normally."""
    schedule_edits(fake)
    seen = {raw["id"] for raw in walk(fake, LinkHeaderPaginator())}
    assert len(fake.listing_edits_done) == 2
    missed = set(in_listing_order(fake)) - seen
    assert len(missed) >= 3, missed  # three slid from page 2 to page 1, more from page 3 to 2


def test_keyset_paging_sees_every_issue_once_per_version(fake):
    edited = schedule_edits(fake)
    raws = walk(fake, SinceKeysetPaginator(key="updated_at", id_key="id", per_page=100))
    versions = [(r["id"], r["updated_at"]) for r in raws]
    assert len(versions) == len(set(versions))  # the overlap between pages is dropped
    assert {r["id"] for r in raws} == set(in_listing_order(fake))  # nothing missed
    newest = {r["id"]: r["updated_at"] for r in raws}  # the last version of each issue is the current one
    assert all(newest[i] == fake.issue(i - 1_000_000)["updated_at"] for i in newest)
    twice = {i for i in newest if sum(1 for r in raws if r["id"] == i) == 2}
    assert twice == set(edited[:5])  # read, then edited: read again; the issue of page 4 only once, edited


def test_a_page_of_issues_updated_in_one_second_is_paged_by_number_then_by_key(fake):
    """More than a page of issues sharing one updated_at: the paginator cannot move its key, so it
    pages by number within that second, then by key again; still every issue exactly once."""
    order = in_listing_order(fake)
    fake.bump(order[50:300])  # 250 issues updated in the same second, the newest
    raws = walk(fake, SinceKeysetPaginator(key="updated_at", id_key="id", per_page=100))
    assert sorted(r["id"] for r in raws) == sorted(order)


def test_a_sync_stores_every_issue_although_issues_are_edited_while_it_pages(store, db_url, fake, dagster_instance):
    integ = github(store, fake)
    schedule_edits(fake)
    run = execute_sync(ref(db_url), "github", integ.id, instance=dagster_instance)
    assert run.status == DagsterRunStatus.SUCCESS
    assert [len(ids) for ids in fake.listing_edits_done] == [3, 3]
    with store.engine.connect() as conn:
        stored = dict(conn.execute(select(github_issues.c.issue_id, github_issues.c.updated_at)
                                   .where(github_issues.c.integration_id == integ.id)).all())
    assert set(stored) == set(in_listing_order(fake))  # every issue stored
    assert all(stored[i] == fake.issue(i - 1_000_000)["updated_at"] for i in stored)  # each at its latest version
    sr = latest(store, integ.id)
    assert sr["status"] == "success" and sr["items_total"] == ISSUES + 5  # read, edited, read again
    assert store.get_integration(integ.id).cursor == max(stored.values())


def test_the_declarative_twin_stores_every_issue_too(store, db_url, fake, dagster_instance):
    """providers/github/issues.yaml pages with ``{kind: since_keyset}``: the same guarantee as configuration."""
    from integrations_dagster import DefinitionsRef
    from integrations_dagster.declarative import migrate_destinations
    from providers.github.rest import github_issues_rest

    migrate_destinations(store, github_issues_rest())
    integ = store.create_integration(
        provider_key="github_issues_rest", name="conf", credentials={"token": TOKEN},
        metadata={"owner": fake.owner, "repo": fake.repo, "base_url": fake.url, "since": "2000-01-01T00:00:00Z"})
    schedule_edits(fake)
    rest_ref = DefinitionsRef("tests.support.rest_app", "make_defs", {"database_url": db_url})
    assert execute_sync(rest_ref, "github_issues_rest", integ.id, instance=dagster_instance).status \
        == DagsterRunStatus.SUCCESS
    table = github_issues_rest().tables()["issues"]
    with store.engine.connect() as conn:
        stored = dict(conn.execute(select(table.c.issue_id, table.c.updated_at)
                                   .where(table.c.integration_id == integ.id)).all())
    assert set(stored) == set(in_listing_order(fake))
    assert all(stored[i] == fake.issue(i - 1_000_000)["updated_at"] for i in stored)
