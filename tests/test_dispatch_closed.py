"""Issue 9 point 9 (second half): ``dispatch`` after the session ended raises and writes nothing,
also when the enumeration failed (both databases).

The success path is ``tests/test_bad_data.py::test_dispatch_after_the_session_ended_raises_and_writes_nothing``.
"""

from __future__ import annotations

import threading
import pytest

from integrations_dagster import Provider, SyncItemEvent, SyncSettings, listener
from integrations_dagster.authoring.listeners import ListenerRegistry
from integrations_dagster.authoring.session import SyncSessionClosed
from integrations_dagster.engine.engine import SyncEngine


class Item(SyncItemEvent):
    n: int


@listener(Item)
def noop(event: Item) -> None:
    return None


def test_a_helper_thread_dispatching_after_a_failed_enumeration_is_refused(store):
    go, done = threading.Event(), threading.Event()
    late: list[BaseException] = []

    class Failing(Provider):
        key = "failing"

        def sync(self, integration, session):  # type: ignore[no-untyped-def]
            def helper() -> None:
                go.wait(30)
                try:
                    session.dispatch(Item(n=1), checkpoint_value=1, external_id="late")
                except BaseException as exc:  # noqa: BLE001 - the test inspects it
                    late.append(exc)
                done.set()

            threading.Thread(target=helper, daemon=True).start()
            session.dispatch(Item(n=0), checkpoint_value=0, external_id="early")
            raise RuntimeError("the API went away")

    engine = SyncEngine(providers=[Failing()], listeners=ListenerRegistry.build([noop]), settings=SyncSettings())
    integ = store.create_integration(provider_key="failing", name="f")
    start = engine.start_run(store, integ.id, dagster_run_id=None)
    with pytest.raises(Exception, match="the API went away"):
        engine.enumerate(store, store.get_integration(integ.id), start.run_id)
    go.set()
    assert done.wait(30)
    assert len(late) == 1 and isinstance(late[0], SyncSessionClosed), late
    run = store.get_run(start.run_id)
    assert run["status"] == "failed" and store.items_for_run(start.run_id) == []
    assert engine.reconcile(store, start.run_id).status == "failed"
    assert store.get_integration(integ.id).cursor is None
