"""The `wardgate` command: serve, check, gen-secret, user …, db upgrade | current | history | downgrade.

The commands that read or change the migration chain import `storage.schema` (Alembic: 11 MB and
100 ms of imports) themselves, so that `serve` on a database at the head never loads it.
"""

from __future__ import annotations

import argparse
import gc
import getpass
import logging
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from wardgate.app import create_app
from wardgate.config import Settings, load_settings, redacted_settings
from wardgate.config.loading import read_environment
from wardgate.config.review import production_findings
from wardgate.config.values import ROLE_NAMES, Role
from wardgate.errors import ApiError, ConfigError, StoreError
from wardgate.gateway import Gateway, key_ids
from wardgate.http import server
from wardgate.http.application import ASGIApp
from wardgate.identity.records import UserChanges
from wardgate.observability import metrics
from wardgate.sessions.records import UserState
from wardgate.storage import db

if TYPE_CHECKING:
    from wardgate.storage.schema import Revision

log = logging.getLogger("wardgate")


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command != "serve":
        gc.enable()  # off since `wardgate.__main__`; a server turns it on once started (`settle_heap`)
    try:
        settings = load_settings(read_environment(os.environ), persist_secret=args.command != "check")
    except ConfigError as exc:
        print(f"wardgate: {exc}", file=sys.stderr)
        return 2 if args.command != "check" else 1
    logging.basicConfig(level=settings.global_log_level, format=_LOG_FORMAT)
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        return handler(settings, args)
    except ConfigError as exc:
        print(f"wardgate: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"wardgate: {exc.detail}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"wardgate: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wardgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", help="listen address (default HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default PORT or 8080)")
    serve.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM; or SSL_CERTFILE)")
    serve.add_argument("--ssl-keyfile", help="private key for --ssl-certfile (or SSL_KEYFILE)")
    serve.set_defaults(handler=_serve)
    check = commands.add_parser("check", help="validate the configuration and print it, secrets redacted")
    check.add_argument("--production", action="store_true", help="also fail on production security findings")
    check.add_argument(
        "--keys", action="store_true", help="also count, in the database, what each secret's key still holds"
    )
    check.set_defaults(handler=_check)
    commands.add_parser("gen-secret", help="print a new random WEBUI_SECRET_KEY").set_defaults(
        handler=_gen_secret
    )
    dbp = commands.add_parser("db", help="database maintenance").add_subparsers(
        dest="db_command", required=True
    )
    dbp.add_parser("upgrade", help="apply pending migrations").set_defaults(handler=_db_upgrade)
    dbp.add_parser("current", help="the database's revision").set_defaults(handler=_db_current)
    dbp.add_parser("history", help="every migration, oldest first").set_defaults(handler=_db_history)
    down = dbp.add_parser("downgrade", help="undo migrations down to REV (drops their tables)")
    down.add_argument("revision", metavar="REV", help='a revision from `db history`, or "base"')
    down.add_argument("--yes", action="store_true", help="do not ask (required without a terminal)")
    down.set_defaults(handler=_db_downgrade)
    _user_parser(
        commands.add_parser("user", help="manage accounts").add_subparsers(dest="user_command", required=True)
    )
    return parser


def _user_parser(users: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = users.add_parser("add", help="create an account (password read from stdin or prompted)")
    add.add_argument("email")
    add.add_argument("--name", required=True)
    add.add_argument("--role", choices=ROLE_NAMES, default="user")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(handler=_user_add)
    users.add_parser("list", help="list accounts").set_defaults(handler=_user_list)
    set_role = users.add_parser("set-role", help="change an account's role")
    set_role.add_argument("email")
    set_role.add_argument("role", choices=ROLE_NAMES)
    set_role.set_defaults(handler=_user_set_role)
    for name, helptext, handler in (
        ("disable", "disable an account (ends its sessions)", _user_disable),
        ("enable", "enable a disabled account", _user_enable),
        ("delete", "delete an account (ends its sessions)", _user_delete),
        ("revoke-sessions", "end every session of an account", _user_revoke),
        ("reset-mfa", "remove every second factor of an account (ends its sessions)", _user_reset_mfa),
    ):
        sub = users.add_parser(name, help=helptext)
        sub.add_argument("email")
        sub.set_defaults(handler=handler)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    certfile = args.ssl_certfile or (str(settings.ssl_certfile) if settings.ssl_certfile else None)
    keyfile = args.ssl_keyfile or (str(settings.ssl_keyfile) if settings.ssl_keyfile else None)
    if bool(certfile) != bool(keyfile):
        raise ConfigError(["--ssl-certfile / --ssl-keyfile: give both, or neither"])
    for finding in production_findings(settings):
        log.warning("configuration: %s", finding)
    host, port = args.host or settings.host, args.port or settings.port
    if settings.uvicorn_workers == 1:
        server.run(create_app(settings), settings, host=host, port=port, certfile=certfile, keyfile=keyfile)
        return 0
    # The workers are spawned, and load the settings again from the environment they inherit: give
    # them this one, with the host and port chosen here, and a directory for their metrics (emptied
    # now: the files of an earlier run's workers must not count).
    # The environment is frozen here, `.env` included: a worker the supervisor replaces later (it
    # died, or SIGHUP) runs exactly these settings, never a `.env` edited since (another key).
    gc.enable()  # the supervisor serves nothing: nothing of its start-up to freeze
    metrics_dir = settings.data_dir / "run" / "metrics"
    os.environ.update(read_environment(os.environ))
    os.environ.update({"HOST": host, "PORT": str(port), **metrics.prepare_multiprocess(metrics_dir)})
    server.run_workers(
        f"{__name__}:{worker_app.__name__}",
        settings,
        host=host,
        port=port,
        certfile=certfile,
        keyfile=keyfile,
        on_exit=lambda pid: metrics.worker_exited(pid, metrics_dir),
    )
    return 0


def worker_app() -> ASGIApp:
    """The application of one worker process (`UVICORN_WORKERS`), from the environment it inherited."""
    settings = load_settings(read_environment(os.environ, env_file=None))  # as frozen by `_serve`
    logging.basicConfig(level=settings.global_log_level, format=_LOG_FORMAT)
    server.configure_worker(settings)
    app = create_app(settings)
    server.settle_heap()
    return app


def _check(settings: Settings, args: argparse.Namespace) -> int:
    for name, value in redacted_settings(settings).items():
        print(f"{name}={value}")
    _report_keys(settings, count=args.keys)
    findings = production_findings(settings)
    for finding in findings:
        print(f"finding: {finding}", file=sys.stderr)
    if args.production and findings:
        print(f"wardgate: {len(findings)} production finding(s)", file=sys.stderr)
        return 1
    print("configuration OK", file=sys.stderr)
    return 0


def _report_keys(settings: Settings, *, count: bool) -> None:
    """Each secret by its key id (never the secret) and, with `count`, what the database still holds
    under it: what stops working once that secret leaves WEBUI_SECRET_KEY_FALLBACKS."""
    ids = key_ids(settings)
    keys, codes, totp = _key_usage(settings) if count else ({}, {}, (0, 0))
    for n, kid in enumerate(ids):
        role = "WEBUI_SECRET_KEY, signs" if n == 0 else f"WEBUI_SECRET_KEY_FALLBACKS #{n}, accepted"
        held = f": {keys.get(kid, 0)} API keys, {codes.get(kid, 0)} accounts' recovery codes"
        print(f"key {kid} ({role}){held if count else ''}")
    if not count:
        return
    print(
        f"key not recorded (stored before key ids, under the secret of that time): {keys.get(None, 0)} "
        f"API keys (recorded at their next use), {codes.get(None, 0)} accounts' recovery codes"
    )
    dropped = sum(n for kid, n in keys.items() if kid is not None and kid not in ids)
    print(f"keys no longer configured: {dropped} API keys (they no longer work)")
    print(
        f"TOTP secrets under an older key: {totp[0]} (re-encrypted at their next use); unreadable: {totp[1]}"
    )


def _key_usage(
    settings: Settings,
) -> tuple[dict[str | None, int], dict[str | None, int], tuple[int, int]]:
    """API keys and recovery codes by key id, and the TOTP secrets not under the newest key."""
    from wardgate.storage import schema

    gateway = Gateway.build(settings)
    try:
        if schema.current(gateway.engine) != schema.head():
            raise StoreError("the database is not at the newest revision: run `wardgate db upgrade`")
        factors = gateway.mfa.factors
        return (
            gateway.api_keys.count_by_secret(),
            factors.recovery_codes_by_secret(),
            factors.totp_secrets_behind(),
        )
    finally:
        gateway.engine.dispose()


def _gen_secret(_settings: Settings, _args: argparse.Namespace) -> int:
    print(secrets.token_urlsafe(48))
    return 0


def _engine(settings: Settings) -> Engine:
    return db.create_db_engine(settings.effective_database_url)


def _db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    from wardgate.storage import schema

    engine = _engine(settings)
    schema.upgrade(engine, lock_dir=settings.data_dir)
    print(f"database is up to date (revision {schema.current(engine)})")
    return 0


def _db_current(settings: Settings, _args: argparse.Namespace) -> int:
    from wardgate.storage import schema

    revision = schema.current(_engine(settings))
    if revision is None:
        print("no schema yet (wardgate creates it at start, or run `wardgate db upgrade`)")
    else:
        print(
            f"{revision}{' (head)' if revision == schema.head() else ' (behind: run `wardgate db upgrade`)'}"
        )
    return 0


def _db_history(_settings: Settings, _args: argparse.Namespace) -> int:
    from wardgate.storage import schema

    head = schema.head()
    for revision in schema.history():
        mark = " (head)" if revision.id == head else ""
        print(f"{revision.down or 'base'} -> {revision.id}{mark}: {revision.title}")
    return 0


def _db_downgrade(settings: Settings, args: argparse.Namespace) -> int:
    from wardgate.storage import schema

    engine = _engine(settings)
    undone = _revisions_between(args.revision, schema.current(engine))
    if not undone:
        print(f"nothing to undo: the database is at or below {args.revision}")
        return 0
    print("this undoes: " + "; ".join(f"{r.id} ({r.title})" for r in undone), file=sys.stderr)
    print(
        "their tables and every row in them are dropped; running servers re-apply them at start",
        file=sys.stderr,
    )
    if not args.yes:
        if not sys.stdin.isatty():
            print("wardgate: refusing without --yes (no terminal to confirm on)", file=sys.stderr)
            return 1
        if input("type 'downgrade' to continue: ").strip() != "downgrade":
            print("wardgate: not confirmed; nothing changed", file=sys.stderr)
            return 1
    schema.downgrade(engine, args.revision, lock_dir=settings.data_dir)
    print(f"database is at revision {schema.current(engine) or 'base'}")
    return 0


def _revisions_between(target: str, current: str | None) -> list[Revision]:
    """The applied migrations a downgrade to `target` would undo, newest first (StoreError if unknown)."""
    from wardgate.storage import schema

    chain = schema.history()
    ids = [r.id for r in chain]
    if target != "base" and target not in ids:
        raise StoreError(f"unknown revision {target!r}; `wardgate db history` lists them")
    start = 0 if target == "base" else ids.index(target) + 1
    end = ids.index(current) + 1 if current in ids else 0
    return chain[start:end][::-1]


def _offline(settings: Settings) -> Gateway:
    """Services for a one-off command: migrated database, loaded view."""
    from wardgate.storage import schema

    gateway = Gateway.build(settings)
    schema.upgrade(gateway.engine, lock_dir=settings.data_dir)
    return gateway


def _target(gateway: Gateway, email: str) -> UserState:
    row = gateway.accounts.find_by_email(email)
    if row is None:
        raise ApiError(f"no account with email {email}")
    return UserState.from_row(row)


def _system_actor() -> UserState:
    return UserState(
        id="cli", email="cli", name="command line", role=Role.ADMIN, active=True, session_stamp=""
    )


def _user_add(settings: Settings, args: argparse.Namespace) -> int:
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")
    user = _offline(settings).accounts.create_user(args.name, args.email, password, role=args.role)
    print(f"created {user.email} ({user.role}) id={user.id}")
    return 0


def _user_list(settings: Settings, _args: argparse.Namespace) -> int:
    directory = _offline(settings).directory
    cursor = None
    while True:  # every account, a page at a time
        page = directory.users(cursor=cursor, limit=500)
        for row in page.rows:
            state = "active" if row.active else "disabled"
            factor = "mfa" if row.mfa_enabled else "no-mfa"
            print(f"{row.id}  {row.email}  {row.role}  {state}  {factor}  {row.name}")
        if page.next_cursor is None:
            return 0
        cursor = page.next_cursor


def _change(settings: Settings, email: str, changes: UserChanges) -> int:
    gateway = _offline(settings)
    target = _target(gateway, email)
    user = gateway.accounts.update_user(_system_actor(), target.id, changes)
    print(f"{user.email}: role={user.role} active={str(user.active).lower()}")
    return 0


def _user_set_role(settings: Settings, args: argparse.Namespace) -> int:
    return _change(settings, args.email, UserChanges(role=args.role))


def _user_disable(settings: Settings, args: argparse.Namespace) -> int:
    return _change(settings, args.email, UserChanges(active=False))


def _user_enable(settings: Settings, args: argparse.Namespace) -> int:
    return _change(settings, args.email, UserChanges(active=True))


def _user_delete(settings: Settings, args: argparse.Namespace) -> int:
    gateway = _offline(settings)
    gateway.accounts.delete_user(_system_actor(), _target(gateway, args.email).id)
    print(f"deleted {args.email}")
    return 0


def _user_revoke(settings: Settings, args: argparse.Namespace) -> int:
    gateway = _offline(settings)
    gateway.accounts.revoke_all_sessions(_target(gateway, args.email).id)
    print(f"ended every session of {args.email}")
    return 0


def _user_reset_mfa(settings: Settings, args: argparse.Namespace) -> int:
    """The way back in for an account (the last admin's, say) that lost every factor and code."""
    gateway = _offline(settings)
    gateway.mfa.reset(_system_actor(), _target(gateway, args.email).id)
    print(f"removed every second factor of {args.email} and ended its sessions")
    return 0
