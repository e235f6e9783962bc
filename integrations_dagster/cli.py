"""The ``integrations`` console script: operators fix syncs without SQL.

One verb per action (see ``docs/OPERATIONS.md``). Exit codes: 0 success, 1 an error the user can act
on (the message names the thing, no stack trace), 2 usage. Listings print a table, or JSON with
``--json`` (stable keys, documented). Progress goes to stderr so ``--json`` output stays parseable.

Only the verbs that run a Dagster job (``sync``, ``retry``) import Dagster. Every other verb answers
from the integrations database alone: this module imports click and the standard library, the store
and the operations are imported by the verb that uses them, and the definitions module is loaded for
its engine only (``_codeloc.load_engine``: providers and listeners, no Dagster objects).
``tests/test_cli_fast.py`` fails when one of them imports ``dagster``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from integrations_dagster.errors import IntegrationsError
from integrations_dagster.status import SUMMARY_KEYS, run_summary


class _LazyModule:
    """``ops.name`` imports ``_operations`` (and SQLAlchemy) on first use, not when the CLI starts."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


ops: Any = _LazyModule("integrations_dagster.operations.actions")
#: ``_operations.DEFAULT_PRUNE_DAYS`` (a test keeps them equal): --help must not import the operations.
DEFAULT_PRUNE_DAYS = 30

DEFAULT_DEFS = "integrations_app.definitions:defs"
ENV_DATABASE_URL = "INTEGRATIONS_DATABASE_URL"
ENV_DEFS = "INTEGRATIONS_DEFINITIONS"
ENV_TENANT = "INTEGRATIONS_TENANT"


class UserError(IntegrationsError):
    """An error the CLI reports as ``Error: ...`` with exit code 1."""


# --- context --------------------------------------------------------------------------------------
class Env:
    """Lazily opened store, definitions and Dagster instance for one CLI invocation."""

    def __init__(self, database_url: str | None, defs: str | None, tenant: str | None, verbose: bool) -> None:
        self._database_url = database_url
        self.defs_spec = defs or os.environ.get(ENV_DEFS) or DEFAULT_DEFS
        self.tenant = tenant
        self.verbose = verbose
        #: Set by the verbs that run a Dagster job: their engine comes from real Definitions.
        self.runs_jobs = False
        self._store: Any = None
        self._engine: Any = None

    @property
    def database_url(self) -> str:
        url = self._database_url or os.environ.get(ENV_DATABASE_URL)
        if not url:
            from integrations_dagster.settings import default_database_url

            url = default_database_url()
        # Dagster runs executed by this process (sync --wait, retry) read the same database.
        os.environ[ENV_DATABASE_URL] = url
        return url

    @property
    def store(self) -> Any:
        if self._store is None:
            from sqlalchemy.exc import SQLAlchemyError

            from integrations_dagster.security.secrets import CredentialCipher
            from integrations_dagster.store import Store

            try:
                store = Store.for_url(self.database_url)
            except SQLAlchemyError as exc:
                raise UserError(f"cannot open the integrations database {_safe_url(self.database_url)}: "
                                f"{_first_line(exc)}") from None
            store.cipher = CredentialCipher()  # the key(s) in this invocation's environment
            self._store = store
        return self._store

    @property
    def defs_target(self) -> tuple[str, str]:
        module, _, attr = self.defs_spec.partition(":")
        if not module:
            raise UserError(f"--defs {self.defs_spec!r} must look like module:attribute")
        return module, attr or "defs"

    @property
    def ref(self) -> Any:
        from integrations_dagster.orchestration.in_process import DefinitionsRef

        return DefinitionsRef(*self.defs_target)

    @property
    def engine(self) -> Any:
        """The definitions' ``SyncEngine``: without Dagster (``load_engine``) unless the verb runs jobs."""
        if self._engine is None:
            from integrations_dagster.orchestration.code_location import engine_of, load_engine

            _ = self.database_url  # exported before the definitions read their settings
            module, attr = self.defs_target
            try:
                engine = engine_of(self.ref.load()) if self.runs_jobs else load_engine(module, attr)
            except LookupError:
                raise UserError(f"the definitions {self.defs_spec!r} were not made by "
                                "integrations_dagster.build_definitions") from None
            except Exception as exc:  # the user's module: any import error is theirs to fix
                raise UserError(
                    f"cannot load the definitions {self.defs_spec!r} ({type(exc).__name__}: {_first_line(exc)}); "
                    f"set --defs or {ENV_DEFS} to module:attribute"
                ) from None
            self._engine = engine
        return self._engine

    def instance(self) -> Any:
        home = os.environ.get("DAGSTER_HOME")
        if not home:
            raise UserError("DAGSTER_HOME is not set: point it at the Dagster instance's home folder (the one "
                            "`dagster dev` uses) so the runs are recorded where the UI shows them")
        if not Path(home).is_dir():
            raise UserError(f"DAGSTER_HOME={home} is not a directory; create it or fix the path")
        from dagster import DagsterInstance

        _ = self.database_url
        warm = Env.warm_instance
        if warm is not None and warm[0] == home:  # a child of the warm sync server
            return warm[1]
        return DagsterInstance.get()

    #: (DAGSTER_HOME, instance) opened once by the warm sync server (``orchestration.sync_server``) and
    #: inherited by each child it forks: a child then does not open the instance again (about 0.1 s).
    warm_instance: tuple[str, Any] | None = None


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tenant(env: Env, tenant: str | None) -> str | None:
    return tenant if tenant is not None else env.tenant


def _progress(message: str) -> None:
    click.echo(message, err=True)


_progress_default = _progress


# --- output helpers -------------------------------------------------------------------------------
def _check_secret_key() -> None:
    """The key check ``Env.store`` makes (``CredentialCipher``), for the verbs that read without the
    store (``store/quick.py``): a malformed ``INTEGRATIONS_SECRET_KEY`` is reported by them too. Without
    ``cryptography``: a Fernet key is 32 url-safe base64 bytes (what ``Fernet()`` checks)."""
    import base64
    import binascii

    for part in (k.strip() for k in os.environ.get("INTEGRATIONS_SECRET_KEY", "").split(",") if k.strip()):
        try:
            ok = len(base64.urlsafe_b64decode(part.encode())) == 32
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            raise UserError("INTEGRATIONS_SECRET_KEY is not a valid Fernet key (32 url-safe base64 bytes); "
                            "make one with `integrations generate-key`")


def _emit_json(data: Any) -> None:
    # ``operations.actions.dumps``, without importing the operations (a test keeps the two equal)
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _cell(value: Any, width: int | None = None) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True)
    else:
        text = str(value)
    text = text.replace("\n", " ")
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], widths: dict[int, int] | None = None) -> None:
    widths = widths or {}
    cells = [[_cell(v, widths.get(i)) for i, v in enumerate(row)] for row in rows]
    sizes = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(sizes[i]) for i, h in enumerate(headers)).rstrip())
    for r in cells:
        click.echo("  ".join(v.ljust(sizes[i]) for i, v in enumerate(r)).rstrip())


def _cursor_text(value: Any) -> str:
    return "null" if value is None else json.dumps(value, sort_keys=True)


def _cursor_move(before: Any, after: Any) -> str:
    """``cursor X -> Y``; a run that recorded no cursor after it (failed, or not settled) left the
    cursor where it was, which ``X -> null`` would misread as a lost cursor."""
    if after is None and before is not None:
        return f"cursor {_cursor_text(before)} (unchanged)"
    return f"cursor {_cursor_text(before)} -> {_cursor_text(after)}"


def _short_time(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


# --- the group ------------------------------------------------------------------------------------
class _Group(click.Group):
    """Turns errors a user can act on into ``Error: ...`` and exit code 1, without a stack trace."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (IntegrationsError, LookupError) as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            # A SQLAlchemy error can only come from a verb that imported SQLAlchemy (help does not).
            sa = sys.modules.get("sqlalchemy.exc")
            if sa is not None and isinstance(exc, (sa.OperationalError, sa.ProgrammingError)):
                raise click.ClickException(f"database error: {_first_line(exc.orig or exc)}") from None
            raise


def tenant_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--tenant", default=None, metavar="T",
        help="Only this tenant's integrations; another tenant's id is 'not found'. Default: the global --tenant.",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (stable keys) instead of a table.")(fn)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database-url", default=None, metavar="URL",
              help=f"Integrations database (sqlite:///... or postgresql://...). Default: ${ENV_DATABASE_URL}, "
              "else SQLite under $DAGSTER_HOME.")
@click.option("--defs", default=None, metavar="MODULE:ATTR",
              help=f"Definitions made by build_definitions. Default: ${ENV_DEFS}, else {DEFAULT_DEFS}.")
@click.option("--tenant", default=None, envvar=ENV_TENANT, metavar="T",
              help=f"Scope every verb to this tenant (also ${ENV_TENANT}).")
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does (to stderr).")
@click.version_option(package_name="integrations-dagster", prog_name="integrations")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, defs: str | None, tenant: str | None, verbose: bool) -> None:
    """Operate integrations: add them, see their status, and recover failed sync items.

    Exit codes: 0 success, 1 an error you can act on, 2 usage.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Env(database_url, defs, tenant, verbose)


pass_env = click.make_pass_decorator(Env)


def _pairs(values: Sequence[str], what: str, *, parse_json: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            # Never echo a --secret value back.
            shown = raw if what == "--meta" else "<hidden>"
            raise click.BadParameter(f"expected key=value, got {shown!r}", param_hint=what)
        if parse_json:
            try:
                out[key.strip()] = json.loads(value)
            except ValueError:
                out[key.strip()] = value
        else:
            out[key.strip()] = value
    return out


# --- integrations ---------------------------------------------------------------------------------
@cli.command("add")
@click.argument("provider")
@click.option("--name", required=True, help="A name operators recognise.")
@click.option("--meta", multiple=True, metavar="K=V", help="Metadata (V parsed as JSON when it is JSON). Repeatable.")
@click.option("--secret", multiple=True, metavar="K=V",
              help="A credential, stored encrypted with INTEGRATIONS_SECRET_KEY. Repeatable.")
@click.option("--interval", type=click.IntRange(min=1), default=None, metavar="MIN", help="Sync every MIN minutes.")
@click.option("--cron", default=None, metavar="EXPR", help="Sync on a cron schedule ('*/15 * * * *', UTC).")
@tenant_option
@json_option
@pass_env
def add_cmd(env: Env, provider: str, name: str, meta: tuple[str, ...], secret: tuple[str, ...],
            interval: int | None, cron: str | None, tenant: str | None, as_json: bool) -> None:
    """Add an integration of PROVIDER; prints its id."""
    if interval is not None and cron is not None:
        raise click.UsageError("--interval and --cron are mutually exclusive")
    integ = ops.add_integration(
        env.store, engine=env.engine, provider_key=provider, name=name,
        metadata=_pairs(meta, "--meta", parse_json=True), credentials=_pairs(secret, "--secret", parse_json=False),
        interval_minutes=interval, cron=cron, tenant=_tenant(env, tenant),
    )
    if as_json:
        _emit_json(ops.show_integration(env.store, integ.id))
    else:
        click.echo(integ.id)


@cli.command("connect")
@click.argument("provider")
@click.option("--authorize-url", "authorize", is_flag=True,
              help="Step 1 of OAuth: print the authorization URL to send the account owner to.")
@click.option("--client-id", default=None, metavar="ID", help="The OAuth app's client id (with --authorize-url).")
@click.option("--redirect-uri", default=None, metavar="URI", help="Where the provider redirects back (with --authorize-url).")
@click.option("--scope", "scopes", multiple=True, metavar="S", help="A scope instead of the provider's (repeatable).")
@click.option("--code", default=None, metavar="CODE", help="Step 2 of OAuth: the callback's authorization code.")
@click.option("--state", default=None, metavar="STATE", help="Step 2 of OAuth: the callback's state.")
@click.option("--redirected-to", "redirected", default=None, metavar="URL",
              help="Step 2 of OAuth: the whole URL the browser was redirected to (code and state are read from it).")
@click.option("--client-secret-env", default="INTEGRATIONS_OAUTH_CLIENT_SECRET", show_default=True, metavar="VAR",
              help="Environment variable holding the OAuth app's client secret (step 2; unset: a public client).")
@click.option("--authorization-endpoint", default=None, metavar="URL",
              help="Another authorization URL than the provider declares (GitHub Enterprise Server).")
@click.option("--token-endpoint", default=None, metavar="URL", help="Another token URL than the provider declares.")
@click.option("--callback", "callback_path", default=None, metavar="FILE",
              help="Instead of OAuth: a token response you already have, as JSON ('-': stdin), or an app "
                   "installation (installation_id, app_id, private_key).")
@click.option("--meta", multiple=True, metavar="K=V", help="Metadata (owner=..., repo=..., client_id=...). Repeatable.")
@click.option("--name", default=None, help="Override the name the provider derives from the account.")
@click.option("--interval", type=click.IntRange(min=1), default=None, metavar="MIN", help="Sync every MIN minutes.")
@click.option("--cron", default=None, metavar="EXPR", help="Sync on a cron schedule ('*/15 * * * *', UTC).")
@tenant_option
@json_option
@pass_env
def connect_cmd(env: Env, provider: str, authorize: bool, client_id: str | None, redirect_uri: str | None,
                scopes: tuple[str, ...], code: str | None, state: str | None, redirected: str | None,
                client_secret_env: str, authorization_endpoint: str | None, token_endpoint: str | None,
                callback_path: str | None, meta: tuple[str, ...], name: str | None, interval: int | None,
                cron: str | None, tenant: str | None, as_json: bool) -> None:
    """Create an integration of PROVIDER from an account's authorization (account setup); prints its id.

    OAuth, in two steps: `integrations connect github --authorize-url --client-id ID --redirect-uri URI
    --meta owner=acme --meta repo=widgets --cron '*/5 * * * *'` prints the URL to open; after the
    owner approves, `integrations connect github --redirected-to 'URI?code=...&state=...'` (or --code
    and --state) exchanges the code and creates the integration: the provider looks up the account
    (GitHub: GET /user), names it and stores the credentials encrypted. Or, with a token response you
    already have: integrations connect github --callback token.json --meta owner=acme --meta repo=widgets
    """
    from integrations_dagster.operations.connect import complete_authorization, connect, start_authorization

    if interval is not None and cron is not None:
        raise click.UsageError("--interval and --cron are mutually exclusive")
    steps = [bool(authorize), bool(code or state or redirected), bool(callback_path)]
    if sum(steps) != 1:
        raise click.UsageError("give one of --authorize-url (step 1), --code/--state or --redirected-to (step 2), "
                               "or --callback")
    if authorize:
        start = start_authorization(
            env.engine, provider_key=provider, client_id=client_id or "", redirect_uri=redirect_uri,
            scopes=list(scopes) or None, metadata=_pairs(meta, "--meta", parse_json=True), name=name,
            interval_minutes=interval, cron=cron, tenant=_tenant(env, tenant),
            authorization_url=authorization_endpoint, token_url=token_endpoint,
        )
        if as_json:
            _emit_json(start.model_dump())
        else:
            click.echo(start.url)
            click.echo(f"(open it within {start.expires_in // 60} minutes; then run: integrations connect {provider} "
                       "--redirected-to '<the URL you were sent back to>')", err=True)
        return
    if code or state or redirected:
        error = error_description = None
        if redirected:
            import urllib.parse

            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(redirected).query))
            code, state = code or query.get("code"), state or query.get("state")
            error, error_description = query.get("error"), query.get("error_description")
        if not state:
            raise click.UsageError("step 2 needs the callback's state (--state, or --redirected-to with ?state=...)")
        integ = complete_authorization(
            env.store, engine=env.engine, state=state, code=code, provider_key=provider, error=error,
            error_description=error_description, client_secret=os.environ.get(client_secret_env) or None,
            tenant=_tenant(env, tenant),
        )
    else:
        try:
            raw = sys.stdin.read() if callback_path == "-" else Path(str(callback_path)).read_text()
        except OSError as exc:
            raise UserError(f"cannot read --callback {callback_path}: {exc.strerror}") from None
        try:
            callback = json.loads(raw)
        except ValueError:
            raise UserError(f"--callback {callback_path} is not JSON (expected the token endpoint's answer)") from None
        if not isinstance(callback, dict):
            raise UserError(f"--callback {callback_path}: expected a JSON object")
        integ = connect(env.store, engine=env.engine, provider_key=provider, callback=callback,
                                 metadata=_pairs(meta, "--meta", parse_json=True), name=name,
                                 interval_minutes=interval, cron=cron, tenant=_tenant(env, tenant))
    if as_json:
        _emit_json(ops.show_integration(env.store, integ.id))
    else:
        click.echo(integ.id)


@cli.command("list")
@tenant_option
@json_option
@pass_env
def list_cmd(env: Env, tenant: str | None, as_json: bool) -> None:
    """List integrations."""
    from integrations_dagster.store.quick import list_integrations as quick_list

    # No SQLAlchemy when the database is already migrated (store/quick.py), as for status.
    _check_secret_key()
    rows = quick_list(env.database_url, tenant=_tenant(env, tenant))
    if rows is None:
        rows = ops.list_integrations(env.store, tenant=_tenant(env, tenant))
    if as_json:
        _emit_json(rows)
        return
    _table(
        ["ID", "TENANT", "PROVIDER", "NAME", "ENABLED", "HEALTH", "SCHEDULE", "CREDENTIALS"],
        [[r["id"], r["tenant"], r["provider"], r["name"], r["enabled"], r["health"],
          f"every {r['interval_minutes']} min" if r["interval_minutes"] else (r["cron"] or "provider default"),
          "stored" if r["has_credentials"] else "none"] for r in rows],
        widths={3: 40},
    )


@cli.command("show")
@click.argument("integration_id", type=int)
@tenant_option
@json_option
@pass_env
def show_cmd(env: Env, integration_id: int, tenant: str | None, as_json: bool) -> None:
    """Show one integration (never its credentials) and its recent runs."""
    from integrations_dagster.store.quick import show_integration as quick_show

    _check_secret_key()
    data = quick_show(env.database_url, integration_id, tenant=_tenant(env, tenant))  # no SQLAlchemy when migrated
    if data is None:
        data = ops.show_integration(env.store, integration_id, tenant=_tenant(env, tenant))
    if as_json:
        _emit_json(data)
        return
    for key in ("id", "tenant", "provider", "name", "metadata", "has_credentials", "enabled", "health",
                "disabled_reason", "interval_minutes", "cron", "cursor", "consecutive_failures", "last_synced_at",
                "next_sync_at", "last_run_status", "created_at"):
        value = _cursor_text(data[key]) if key == "cursor" else _cell(data[key])
        click.echo(f"{key + ':':22} {value}")
    if data["recent_runs"]:
        click.echo("recent runs:")
        for r in data["recent_runs"]:
            click.echo(f"  sync run {r['id']} {r['status']}: {r['total']} items, {r['succeeded']} ok, "
                       f"{r['failed']} failed, {r['skipped']} skipped ({_short_time(r['started_at'])})")


@cli.command("enable")
@click.argument("integration_id", type=int)
@tenant_option
@pass_env
def enable_cmd(env: Env, integration_id: int, tenant: str | None) -> None:
    """Re-enable an integration (healthy again, due at once)."""
    ops.enable_integration(env.store, integration_id, tenant=_tenant(env, tenant))
    click.echo(f"integration {integration_id} enabled")


@cli.command("disable")
@click.argument("integration_id", type=int)
@click.option("--reason", default=None, help="Why (shown by show/list --json).")
@tenant_option
@pass_env
def disable_cmd(env: Env, integration_id: int, reason: str | None, tenant: str | None) -> None:
    """Disable an integration: it is not scheduled until re-enabled."""
    ops.disable_integration(env.store, integration_id, tenant=_tenant(env, tenant), reason=reason)
    click.echo(f"integration {integration_id} disabled")


@cli.command("remove")
@click.argument("integration_id", type=int)
@tenant_option
@pass_env
def remove_cmd(env: Env, integration_id: int, tenant: str | None) -> None:
    """Delete an integration with its runs, items and request log."""
    ops.remove_integration(env.store, integration_id, tenant=_tenant(env, tenant))
    click.echo(f"integration {integration_id} removed")


# --- syncing --------------------------------------------------------------------------------------
def _request_sync(env: Env, instance: Any, provider_key: str, integration_id: int, wait: bool,
                  say: Callable[[str], None] | None = None, direction: str | None = None) -> tuple[str, bool]:
    """Through the scheduler's de-duplicated sync-now: the daemon's queue if one runs, else in this process.

    ``say`` prints what the operator must see (a reclaimed dead run, a sync already in flight); while a
    run executes quietly it is the progress stream, which Dagster's swallowed output does not reach.
    """
    from integrations_dagster.orchestration.request import request_sync, wait_for_run

    _progress = say or _progress_default

    req = request_sync(instance=instance, provider_key=provider_key, integration_id=integration_id,
                       definitions_ref=env.ref, wait=wait, direction=direction)
    for dead in req.reclaimed:
        _progress(f"Dagster run {dead} was left behind by a process that is gone (killed or crashed): "
                  "marked failed; its sync run was reclaimed and reconciled before this sync read the cursor")
    if not req.created:
        _progress(f"a sync of integration {integration_id} is already in flight: Dagster run {req.run_id}")
    if wait and not req.finished:
        _progress(f"waiting for Dagster run {req.run_id} ({req.status.value})...")
        wait_for_run(instance, req.run_id)
    return req.run_id, req.created


def _sync_summary(env: Env, instance: Any, integration_id: int, dagster_run_id: str,
                  created: bool, sync_run_id: int | None = None) -> dict[str, Any]:
    run = instance.get_run_by_id(dagster_run_id)
    if sync_run_id is not None:
        sync_run = env.store.get_run(sync_run_id)
    else:
        sync_run = env.store.run_for_dagster_run(dagster_run_id)
    data: dict[str, Any] = {
        "integration_id": integration_id,
        "dagster_run_id": dagster_run_id,
        "dagster_status": run.status.value if run is not None else None,
        "created": created,
        "sync_run_id": None, "status": "failed", **dict.fromkeys(SUMMARY_KEYS, 0),
        "requests": 0, "cursor_before": None, "cursor_after": None, "error": None,
    }
    if sync_run is not None:
        data.update(
            sync_run_id=sync_run["id"], status=sync_run["status"], **run_summary(sync_run),
            requests=sync_run["request_count"],
            cursor_before=sync_run["cursor_before"], error=sync_run["error"],
            cursor_after=sync_run["cursor_after"] if sync_run["finished_at"] else sync_run["cursor_before"],
        )
    elif run is not None and run.status.value == "SUCCESS":
        data["status"] = "success"
    if sync_run is not None and sync_run.get("direction"):
        from integrations_dagster.engine.push import run_sync_result
        from integrations_dagster.store.outbox import Outbox

        res = run_sync_result(sync_run, Outbox(env.store).run_rejections(sync_run["id"]))
        data["direction"] = sync_run["direction"]
        data["result"] = {
            "pushed": res.pushed, "pulled": res.pulled, "conflicts": res.conflicts, "failed": res.failed,
            "pull_errors": res.pull_errors, "skipped": res.skipped, "retried": res.retried,
            "rejections": [{"mutation_id": r.mutation_id, "entity": r.entity, "key": r.key, "reason": r.reason,
                            "details": r.details} for r in res.rejections],
        }
    return data


def _print_summary(data: dict[str, Any]) -> None:
    click.echo(f"Dagster run {data['dagster_run_id']}: {data['dagster_status']}")
    click.echo(f"sync run {data['sync_run_id'] if data['sync_run_id'] is not None else '-'}: {data['status']}")
    click.echo(f"items {data['total']}: {data['succeeded']} succeeded, {data['failed']} failed, "
               f"{data['skipped']} skipped; {data['requests']} requests")
    click.echo(_cursor_move(data['cursor_before'], data['cursor_after']))
    res = data.get("result")
    if res is not None:
        click.echo(f"{data['direction']}: pushed {res['pushed']}, pulled {res['pulled']}, conflicts "
                   f"{res['conflicts']}, failed {res['failed']}, pull errors {res['pull_errors']}"
                   + (", skipped" if res["skipped"] else ""))
        for r in res["rejections"]:
            click.echo(f"rejected {r['entity']}:{r['key']} ({r['reason']}): {json.dumps(r['details'], default=str)}")
    if data.get("error"):
        click.echo(f"error: {data['error']}")


def _sync_with_progress(env: Env, instance: Any, integ: Any, direction: str | None = None) -> tuple[str, bool]:
    """Run (or join) the sync and wait, showing progress on stderr: live on a terminal, a line per
    phase otherwise; Dagster's event log only with --verbose (``_progress.quiet_run_output``)."""
    from integrations_dagster.operations.progress import Follower, LiveReporter, PlainReporter, quiet_run_output

    with quiet_run_output(verbose=env.verbose) as stream:
        live = bool(getattr(stream, "isatty", lambda: False)())
        reporter: Any = LiveReporter(stream) if live else PlainReporter(stream)
        follower = Follower(env.store, integ.id, reporter.update)
        reporter.start(f"{'syncing' if direction in (None, 'sync') else direction + 'ing'} {integ}")
        follower.start()
        try:
            return _request_sync(env, instance, integ.provider_key, integ.id, True,
                                 say=lambda message: print(message, file=stream, flush=True), direction=direction)
        finally:
            reporter.finish(follower.stop())


def _run_direction(ctx: click.Context, integration_id: int, wait: bool, tenant: str | None, as_json: bool,
                   direction: str | None) -> None:
    env: Env = ctx.obj
    code = _via_sync_server(env, [direction or "sync", str(integration_id), *(["--wait"] if wait else []),
                                  *(["--tenant", tenant] if tenant is not None else []),
                                  *(["--json"] if as_json else [])])
    if code is not None:  # a warm `integrations serve` ran exactly this command
        ctx.exit(code)
    env.runs_jobs = True  # the engine comes from the real Definitions the run uses
    integ = env.store.get_integration(integration_id, tenant=_tenant(env, tenant), decrypt=False)
    if not integ.enabled:
        raise UserError(f"integration {integ.id} is disabled ({integ.disabled_reason or 'no reason given'}); "
                        f"enable it first with `integrations enable {integ.id}`")
    provider = env.engine.provider(integ.provider_key)
    if direction == "push" and not provider.supports_push():
        raise UserError(f"provider {integ.provider_key!r} does not push (no push() method); use `integrations sync`")
    if direction is not None and not provider.supports_push():
        direction = None  # a provider that only pulls: push-then-pull and pull-only are its one sync
    with env.instance() as instance:
        if wait:
            run_id, created = _sync_with_progress(env, instance, integ, direction)
        else:
            run_id, created = _request_sync(env, instance, integ.provider_key, integ.id, wait, direction=direction)
        if not wait:
            if as_json:
                _emit_json({"integration_id": integ.id, "dagster_run_id": run_id, "created": created})
            else:
                click.echo(run_id)
            return
        data = _sync_summary(env, instance, integ.id, run_id, created)
    if as_json:
        _emit_json(data)
    else:
        _print_summary(data)
    ctx.exit(0 if data["status"] == "success" else 1)


@cli.command("sync")
@click.argument("integration_id", type=int)
@click.option("--wait", is_flag=True, help="Follow the run to the end and print its result.")
@tenant_option
@json_option
@click.pass_context
def sync_cmd(ctx: click.Context, integration_id: int, wait: bool, tenant: str | None, as_json: bool) -> None:
    """Start a sync now (de-duplicated against one in flight); prints the Dagster run id.

    For a provider that pushes, the run pushes the outbox's pending mutations, then pulls (Tether's
    cycle). With --wait, prints items, succeeded, failed, skipped, requests, cursor before and after,
    status, and for a pushing provider pushed / pulled / conflicts / failed / rejections; the exit
    code is 0 only when the sync succeeded.
    """
    _run_direction(ctx, integration_id, wait, tenant, as_json, None)


@cli.command("push")
@click.argument("integration_id", type=int)
@click.option("--wait", is_flag=True, help="Follow the run to the end and print its result.")
@tenant_option
@json_option
@click.pass_context
def push_cmd(ctx: click.Context, integration_id: int, wait: bool, tenant: str | None, as_json: bool) -> None:
    """Push only: send the outbox's pending mutations (conflicts' server states are still applied
    locally, as tracked items); no pull. Skipped while another run of the integration is in flight."""
    _run_direction(ctx, integration_id, wait, tenant, as_json, "push")


@cli.command("pull")
@click.argument("integration_id", type=int)
@click.option("--wait", is_flag=True, help="Follow the run to the end and print its result.")
@tenant_option
@json_option
@click.pass_context
def pull_cmd(ctx: click.Context, integration_id: int, wait: bool, tenant: str | None, as_json: bool) -> None:
    """Pull only: fetch the server's snapshots from the stored cursor; pending mutations stay pending."""
    _run_direction(ctx, integration_id, wait, tenant, as_json, "pull")


def _via_sync_server(env: Env, verb_args: list[str]) -> int | None:
    """The exit code of ``verb_args`` run by a warm ``integrations serve`` with this identity, else None."""
    from integrations_dagster.operations.warm_client import identity, run_via_server

    root: list[str] = []
    if env._database_url:
        root += ["--database-url", env._database_url]
    root += ["--defs", env.defs_spec]
    if env.tenant is not None:
        root += ["--tenant", env.tenant]
    if env.verbose:
        root.append("--verbose")
    return run_via_server([*root, *verb_args], identity(env._database_url, env.defs_spec))


@cli.command("serve")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="Unix socket to listen on. Default: $INTEGRATIONS_SYNC_SERVER, else $DAGSTER_HOME/integrations-sync.sock.")
@click.pass_context
def serve_cmd(ctx: click.Context, socket_path: str | None) -> None:
    """Keep Dagster warm for `integrations sync`: imports Dagster and the definitions once, then runs
    each `sync` sent to its socket in a fork of itself (the same run, output and exit code; no
    Python start or `import dagster` per sync). Runs until SIGTERM or Ctrl-C."""
    env: Env = ctx.obj
    if not os.environ.get("DAGSTER_HOME"):
        raise UserError("DAGSTER_HOME is not set: point it at the Dagster instance's home folder")
    from integrations_dagster.orchestration.sync_server import serve

    serve(database_url=env._database_url, defs_spec=env.defs_spec, path=socket_path)


@cli.command("retry")
@click.argument("integration_id", type=int)
@tenant_option
@json_option
@click.pass_context
def retry_cmd(ctx: click.Context, integration_id: int, tenant: str | None, as_json: bool) -> None:
    """Re-run an integration's failed items by re-executing its failed Dagster run from failure.

    Only the failed chunks run again (the UI shows the child run under the same history), then the
    run reconciles. Exit code 0 when the sync run ends successful.
    """
    env: Env = ctx.obj
    env.runs_jobs = True
    store = env.store
    integ = store.get_integration(integration_id, tenant=_tenant(env, tenant), decrypt=False)
    failed = store.failed_items(integration_id=integ.id)
    if not failed:
        raise UserError(f"integration {integ.id} has no failed items to retry")
    sync_run = store.get_run(max(i["run_id"] for i in failed))
    dagster_run_id = sync_run["dagster_run_id"]
    if not dagster_run_id:
        raise UserError(f"sync run {sync_run['id']} of integration {integ.id} has no Dagster run to re-execute; "
                        "use `integrations retry-item ITEM_ID`")
    env.engine.provider(integ.provider_key)
    from integrations_dagster.orchestration.in_process import reexecute_from_failure

    with env.instance() as instance:
        parent = instance.get_run_by_id(dagster_run_id)
        if parent is None:
            raise UserError(f"Dagster run {dagster_run_id} of sync run {sync_run['id']} is not in this Dagster "
                            f"instance (DAGSTER_HOME={os.environ.get('DAGSTER_HOME')}); use `integrations retry-item`")
        if parent.status.value not in ("FAILURE", "CANCELED"):
            raise UserError(f"Dagster run {dagster_run_id} of sync run {sync_run['id']} is {parent.status.value}, "
                            "not failed; it cannot be re-executed from failure")
        child = _retry_with_progress(env, instance, integ.id, sync_run["id"],
                                     f"re-executing Dagster run {dagster_run_id} from failure ({len(failed)} failed "
                                     "items)", lambda: reexecute_from_failure(env.ref, dagster_run_id, instance=instance))
        data = _sync_summary(env, instance, integ.id, child.run_id, True, sync_run_id=sync_run["id"])
    data["parent_dagster_run_id"] = dagster_run_id
    data["cursor_after"] = store.get_integration(integ.id, decrypt=False).cursor
    if as_json:
        _emit_json(data)
    else:
        click.echo(f"re-executed Dagster run {dagster_run_id} from failure")
        _print_summary(data)
    ctx.exit(0 if data["status"] == "success" else 1)


def _retry_with_progress(env: Env, instance: Any, integration_id: int, sync_run_id: int, title: str,
                         execute: Callable[[], Any]) -> Any:
    """Like ``_sync_with_progress`` for a re-execution: it continues the known sync run ``sync_run_id``."""
    from integrations_dagster.operations.progress import Follower, LiveReporter, PlainReporter, quiet_run_output

    with quiet_run_output(verbose=env.verbose) as stream:
        live = bool(getattr(stream, "isatty", lambda: False)())
        reporter: Any = LiveReporter(stream) if live else PlainReporter(stream)
        follower = Follower(env.store, integration_id, reporter.update, sync_run_id=sync_run_id)
        reporter.start(title)
        follower.start()
        try:
            return execute()
        finally:
            reporter.finish(follower.stop())


# --- status and items -----------------------------------------------------------------------------
@cli.command("status")
@click.argument("integration_id", type=int, required=False)
@tenant_option
@json_option
@pass_env
def status_cmd(env: Env, integration_id: int | None, tenant: str | None, as_json: bool) -> None:
    """Health, cursor, last and next sync, last run, pending and failed items per integration."""
    from integrations_dagster.store.quick import status_rows as quick_status_rows

    # No SQLAlchemy when the database is already migrated (store/quick.py): status answers at once.
    rows = quick_status_rows(env.database_url, integration_id=integration_id, tenant=_tenant(env, tenant))
    if rows is None:
        rows = ops.status_rows(env.store, integration_id=integration_id, tenant=_tenant(env, tenant))
    if as_json:
        _emit_json(rows)
        return
    _table(
        ["ID", "PROVIDER", "NAME", "HEALTH", "CURSOR", "LAST SYNCED", "NEXT SYNC", "LAST RUN", "PENDING", "FAILED",
         "SUPERSEDED", "OUTBOX P/F/C"],
        [[r["id"], r["provider"], r["name"], r["health"] if r["enabled"] else "disabled",
          _cursor_text(r["cursor"]), _short_time(r["last_synced_at"]), _short_time(r["next_sync_at"]),
          r["last_run_status"], r["pending_items"], r["failed_items"], r["superseded_items"],
          f"{r['outbox_pending']}/{r['outbox_failed']}/{r['outbox_conflict']}"] for r in rows],
        widths={2: 30, 4: 30},
    )


@cli.command("list-failed-items")
@click.option("--integration", "integration_id", type=int, default=None, metavar="ID", help="Only this integration.")
@tenant_option
@json_option
@pass_env
def list_failed_cmd(env: Env, integration_id: int | None, tenant: str | None, as_json: bool) -> None:
    """Failed sync items that hold a cursor back: retry them or skip them."""
    from integrations_dagster.store.quick import failed_items as quick_failed_items

    _check_secret_key()
    quick = quick_failed_items(env.database_url, integration_id=integration_id, tenant=_tenant(env, tenant))
    if quick is not None:  # a migrated database: no SQLAlchemy (store/quick.py)
        rows, n_mutations = quick
    else:
        rows = ops.list_failed_items(env.store, integration_id=integration_id, tenant=_tenant(env, tenant))
        n_mutations = -1  # counted below, only for the text output
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no failed items")
    else:
        _table(
            ["ID", "INTEGRATION", "EXTERNAL ID", "ATTEMPTS", "FAILED AT", "LAST ERROR"],
            [[r["id"], r["integration_id"], r["external_id"], r["attempts"], _short_time(r["failed_at"]),
              r["last_error"]] for r in rows],
            widths={2: 30, 5: 80},
        )
    # The outbox's counterpart (issue 13): rejected and conflicting mutations have their own ids and verbs.
    if n_mutations < 0:
        n_mutations = len(ops.list_failed_mutations(env.store, integration_id=integration_id, tenant=_tenant(env, tenant)))
    if n_mutations:
        click.echo(f"also {n_mutations} failed or conflicting outbox mutation(s): `integrations list-failed-mutations"
                   + (f" --integration {integration_id}" if integration_id is not None else "") + "`")


def _print_item_result(res: ops.ItemActionResult, verb: str) -> None:
    click.echo(f"sync item {res.item_id} {verb}; sync run {res.sync_run_id} is {res.run_status}")
    click.echo(_cursor_move(res.cursor_before, res.cursor_after))


@cli.command("retry-item")
@click.argument("item_id", type=int)
@tenant_option
@json_option
@click.pass_context
def retry_item_cmd(ctx: click.Context, item_id: int, tenant: str | None, as_json: bool) -> None:
    """Run one failed item's listeners again now; exit 1 if it fails again."""
    env: Env = ctx.obj
    res = ops.retry_item(env.store, env.engine, item_id, tenant=_tenant(env, tenant))
    if as_json:
        _emit_json(res.as_dict())
    elif res.item_status == "success":
        _print_item_result(res, "succeeded")
    elif res.item_status == "superseded":  # a later version succeeded: running this one would overwrite it
        _print_item_result(res, "not retried (superseded)")
        click.echo(res.skip_reason or "")
    else:
        _print_item_result(res, "failed again")
        click.echo(f"error: {res.last_error}")
    ctx.exit(0 if res.item_status in ("success", "superseded") else 1)


@cli.command("skip-sync-item")
@click.argument("item_id", type=int)
@click.option("--reason", default=None, metavar="TEXT", help="Why it is skipped (kept on the item).")
@tenant_option
@json_option
@pass_env
def skip_cmd(env: Env, item_id: int, reason: str | None, tenant: str | None, as_json: bool) -> None:
    """Skip an unrecoverable failed item so the cursor can move past it."""
    res = ops.skip_item(env.store, env.engine, item_id, reason=reason, tenant=_tenant(env, tenant))
    if as_json:
        _emit_json(res.as_dict())
    else:
        _print_item_result(res, "skipped" if res.changed else "was already skipped")


@cli.command("list-failed-mutations")
@click.option("--integration", "integration_id", type=int, default=None, metavar="ID", help="Only this integration.")
@tenant_option
@json_option
@pass_env
def list_failed_mutations_cmd(env: Env, integration_id: int | None, tenant: str | None, as_json: bool) -> None:
    """Rejected (failed) and conflicting outbox mutations; each holds back its key's later mutations."""
    rows = ops.list_failed_mutations(env.store, integration_id=integration_id, tenant=_tenant(env, tenant))
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no failed or conflicting mutations")
        return
    _table(
        ["ID", "INTEGRATION", "ENTITY:KEY", "OP", "STATUS", "ATTEMPTS", "REASON", "DETAILS / SERVER STATE"],
        [[r["id"], r["integration_id"], f"{r['entity']}:{r['key']}", r["operation"], r["status"], r["attempts"],
          r["reason"], json.dumps(r["server_state"] if r["status"] == "conflict" else r["details"], default=str)]
         for r in rows],
        widths={2: 30, 7: 80},
    )


def _print_mutation_result(res: ops.MutationActionResult, verb: str) -> None:
    ids = ", ".join(str(i) for i in res.mutation_ids)
    click.echo(f"mutation(s) {ids} {verb} ({res.changed} changed); integration {res.integration_id} outbox: "
               f"{res.outbox['pending']} pending, {res.outbox['failed']} failed, {res.outbox['conflict']} conflict")


@cli.command("retry-mutation")
@click.argument("mutation_ids", type=int, nargs=-1)
@click.option("--integration", "integration_id", type=int, default=None, metavar="ID",
              help="Every failed and conflicting mutation of this integration.")
@tenant_option
@json_option
@pass_env
def retry_mutation_cmd(env: Env, mutation_ids: tuple[int, ...], integration_id: int | None, tenant: str | None,
                       as_json: bool) -> None:
    """Put failed or conflicting mutations back to pending (attempts reset); the next push sends them
    (`integrations push ID`, the push sensor or the next sync)."""
    res = ops.retry_mutations(env.store, mutation_ids=mutation_ids, integration_id=integration_id,
                              tenant=_tenant(env, tenant))
    if as_json:
        _emit_json(res.as_dict())
    else:
        _print_mutation_result(res, "pending again")
        click.echo(f"push them now with `integrations push {res.integration_id} --wait`")


@cli.command("skip-mutation")
@click.argument("mutation_id", type=int)
@click.option("--reason", default=None, metavar="TEXT", help="Why it is given up (kept on the mutation).")
@tenant_option
@json_option
@pass_env
def skip_mutation_cmd(env: Env, mutation_id: int, reason: str | None, tenant: str | None, as_json: bool) -> None:
    """Give up on a failed or conflicting mutation so the later mutations of its key are pushed."""
    res = ops.skip_mutation(env.store, mutation_id, reason=reason, tenant=_tenant(env, tenant))
    if as_json:
        _emit_json(res.as_dict())
    else:
        _print_mutation_result(res, "skipped")


@cli.command("advance-cursor")
@click.argument("integration_id", type=int)
@click.option("--set-cursor", "set_cursor", default=None, metavar="JSON",
              help="First replace the cursor by this JSON value ('\"2024-05-01T00:00:00Z\"', 42, null), e.g. when "
              "it cannot be ordered with what the provider now reports.")
@tenant_option
@json_option
@pass_env
def advance_cmd(env: Env, integration_id: int, set_cursor: str | None, tenant: str | None, as_json: bool) -> None:
    """Reclaim stuck items and reconcile the integration's unfinished runs so the cursor catches up."""
    new_cursor: Any = ops.KEEP_CURSOR
    if set_cursor is not None:
        try:
            new_cursor = json.loads(set_cursor)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON ({exc}); quote a string: '\"2024-05-01T00:00:00Z\"'",
                                     param_hint="--set-cursor") from None
    store, engine = env.store, env.engine
    tenant = _tenant(env, tenant)
    store.get_integration(integration_id, tenant=tenant, decrypt=False)
    alive: Callable[[str], Any] | None = None
    opened: list[Any] = []  # the Dagster instance, opened only when an unfinished run must be checked
    if os.environ.get("DAGSTER_HOME") and Path(os.environ["DAGSTER_HOME"]).is_dir():
        checks: list[Callable[[str], Any]] = []

        def lazy_alive(dagster_run_id: str) -> Any:
            if not checks:
                from integrations_dagster.orchestration.definitions import run_alive_check

                opened.append(env.instance())
                checks.append(run_alive_check(opened[0]))
            return checks[0](dagster_run_id)

        alive = lazy_alive
    try:
        res = ops.advance_cursor(store, engine, integration_id, tenant=tenant, is_run_alive=alive,
                                 progress=_progress, set_cursor=new_cursor)
    finally:
        for instance in opened:
            instance.dispose()
    if as_json:
        _emit_json(res.as_dict())
        return
    if res.reclaimed_items or res.abandoned_items:
        click.echo(f"reclaimed {len(res.reclaimed_items)} stuck and {len(res.abandoned_items)} abandoned items "
                   "as failed (see list-failed-items)")
    click.echo(f"reconciled {len(res.runs)} runs of integration {integration_id}")
    click.echo(_cursor_move(res.cursor_before, res.cursor_after))


@cli.command("timeline")
@click.argument("integration_id", type=int)
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="How many runs.")
@tenant_option
@json_option
@pass_env
def timeline_cmd(env: Env, integration_id: int, limit: int, tenant: str | None, as_json: bool) -> None:
    """Runs (newest first) and, under each, the API requests it made."""
    runs = ops.timeline(env.store, integration_id, limit=limit, tenant=_tenant(env, tenant))
    if as_json:
        _emit_json(runs)
        return
    if not runs:
        click.echo(f"integration {integration_id} has no runs yet")
    for r in runs:
        click.echo(f"sync run {r['id']}  {r['status']}  {_short_time(r['started_at'])} -> "
                   f"{_short_time(r['finished_at'])}  trigger={r['trigger'] or '-'}  dagster={r['dagster_run_id'] or '-'}")
        click.echo(f"  items {r['total']}: {r['succeeded']} ok, {r['failed']} failed, {r['skipped']} skipped, "
                   f"{r['superseded']} superseded; " + _cursor_move(r['cursor_before'], r['cursor_after']))
        if r.get("direction"):  # a provider that pushes: what the run's push did (docs/PUSH.md)
            push = r.get("push") or {}
            click.echo(f"  direction {r['direction']}: " + (
                f"pushed {push.get('pushed', 0)}, conflicts {push.get('conflicts', 0)}, rejected "
                f"{push.get('failed', 0)}, retried later {push.get('retried', 0)}" if r.get("push") is not None
                else "no push"))
        if r["error"]:
            click.echo(f"  error: {_cell(r['error'], 200)}")
        for q in r["request_log"]:
            click.echo(f"    {q['method']} {q['url']} -> {q['status_code'] or '-'} in {q['duration_ms']} ms"
                       + (f" (attempt {q['attempt']})" if q["attempt"] > 1 else "")
                       + (f" error: {_cell(q['error'], 120)}" if q["error"] else ""))


@cli.command("prune")
@click.option("--days", type=click.IntRange(min=0), default=DEFAULT_PRUNE_DAYS, show_default=True,
              help="Delete success/skipped items and request log rows older than this.")
@tenant_option
@json_option
@pass_env
def prune_cmd(env: Env, days: int, tenant: str | None, as_json: bool) -> None:
    """Delete old success/skipped item rows and request log rows; failed rows stay."""
    res = ops.prune(env.store, days=days, tenant=_tenant(env, tenant), progress=_progress)
    if as_json:
        _emit_json(res.as_dict())
    else:
        click.echo(f"deleted {res.sync_items_deleted} sync items and {res.requests_deleted} request log rows "
                   f"older than {days} days")


# --- database and keys ----------------------------------------------------------------------------
@cli.group("db", cls=_Group)
def db_group() -> None:
    """Database maintenance."""


@db_group.command("upgrade")
@tenant_option
@pass_env
def db_upgrade_cmd(env: Env, tenant: str | None) -> None:
    """Apply migrations (also done automatically on first use)."""
    store = env.store
    store.migrate()
    click.echo(f"database {_safe_url(store.url)} is at revision {store.current_revision()}")


# --- declarative REST providers ----------------------------------------------------------------
@cli.group("rest", cls=_Group)
def rest_group() -> None:
    """Providers written as configuration (docs/REST_PROVIDERS.md)."""


@rest_group.command("migrate")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False), metavar="[YAML]...")
@click.option("--check", is_flag=True, help="Only show what would be done; exit 1 when a table needs a migration.")
@click.option("--accept", is_flag=True,
              help="Record the configuration as the next revision of tables you altered yourself (no DDL).")
@json_option
@pass_env
def rest_migrate_cmd(env: Env, files: tuple[str, ...], check: bool, accept: bool, as_json: bool) -> None:
    """Create or change the destination tables of declarative providers, one recorded revision each.

    YAML: the providers' files; none: every declarative provider of the definitions. New tables are
    created and new columns added; a change of type, key or nullability is refused with what to do.
    Running it again does nothing. Example: integrations rest migrate my_api.yaml --check
    """
    from integrations_dagster.declarative import RestProvider
    from integrations_dagster.declarative.migrate import describe, migrate_destinations, plan_destinations, summary

    if check and accept:
        raise click.UsageError("--check and --accept are mutually exclusive")
    if files:
        providers = [RestProvider.from_yaml(f) for f in files]
    else:
        providers = [p for p in env.engine.providers.values() if isinstance(p, RestProvider)]
        if not providers:
            raise UserError(f"the definitions {env.defs_spec} have no declarative provider: name the YAML file(s)")
    plans = []
    for provider in providers:
        plans += plan_destinations(env.store, provider) if check else migrate_destinations(env.store, provider, accept=accept)
    if as_json:
        _emit_json(summary(plans))
    else:
        for line in describe(plans):
            click.echo(line)
        if not check:
            applied = sum(1 for p in plans if p.status == "pending")
            refused = sum(1 for p in plans if p.refused)
            if refused:
                click.echo(f"applied {applied} migration(s); {refused} table(s) left as they are (see above)")
            else:
                click.echo(f"applied {applied} migration(s)" + ("" if applied else ": every table is up to date"))
    if any(p.refused for p in plans) or (check and any(p.status == "pending" for p in plans)):
        sys.exit(1)


@cli.command("generate-key")
@tenant_option
def generate_key_cmd(tenant: str | None) -> None:
    """Print a new Fernet key for INTEGRATIONS_SECRET_KEY."""
    from integrations_dagster.security.secrets import generate_key

    click.echo(generate_key())


@cli.command("rotate-key")
@tenant_option
@json_option
@pass_env
def rotate_key_cmd(env: Env, tenant: str | None, as_json: bool) -> None:
    """Re-encrypt every stored credential with the first key of INTEGRATIONS_SECRET_KEY=NEW,OLD."""
    res = ops.rotate_credentials(env.store, tenant=_tenant(env, tenant), progress=_progress)
    if as_json:
        _emit_json(res.as_dict())
    else:
        click.echo(f"re-encrypted the credentials of {res.rotated} integrations with the first key")


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="integrations")


if __name__ == "__main__":  # pragma: no cover
    main()
