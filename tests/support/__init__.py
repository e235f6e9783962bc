

def open_instance(home: object):  # type: ignore[no-untyped-def]
    """``DagsterInstance.from_config(home)`` as a Dagster process opens it: with ``DAGSTER_HOME`` set to that
    home while the instance is built (the project's dagster.yaml storage and compute logs live under
    ``$DAGSTER_HOME``, as Dagster's defaults do)."""
    import os

    from dagster import DagsterInstance

    old = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        return DagsterInstance.from_config(str(home))
    finally:
        if old is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = old
