"""Administration: ``python -m serve_app.cli`` (installed as ``primitives-admin``).

primitives-admin db upgrade
primitives-admin users create alice           # asks for the password
echo "$PW" | primitives-admin users create alice --password-stdin
primitives-admin users list
primitives-admin users set-password alice
primitives-admin users delete alice
primitives-admin users set-max-priority batchbot 2   # the highest priority they may ask for
primitives-admin retention run --days 30       # purge settled tasks older than 30 days
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session

from config.settings import get_settings
from storage import users
from storage.database import make_engine, make_session_factory, utcnow
from storage.retention import purge_settled_before

# An operator's account: a password this short is guessed within the login limits' reach.
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # as the login form takes
MAX_USERNAME = 64  # the column's width, as the login form takes


def upgrade_database(url: str | None = None) -> None:
    """Apply every Alembic migration to the configured (or given) database."""
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    cfg = Config(str(Path(__file__).resolve().parent.parent / "alembic.ini"))
    cfg.attributes["configure_logging"] = False
    if url:
        cfg.attributes["database_url"] = url
    command.upgrade(cfg, "head")


def _username(name: str) -> str:
    """A name a login can send: 1 to 64 characters, no control character."""
    if not 1 <= len(name) <= MAX_USERNAME:
        raise SystemExit(f"the user name must be 1 to {MAX_USERNAME} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise SystemExit("the user name holds a control character")
    return name


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise SystemExit("the passwords differ")
    if not password:
        raise SystemExit("the password is empty")
    if len(password) < MIN_PASSWORD:
        raise SystemExit(f"the password is shorter than {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD or "\x00" in password:
        raise SystemExit(f"the password must be under {MAX_PASSWORD} characters, without NUL")
    return password


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="primitives-admin", description="Platform administration")
    sub = parser.add_subparsers(dest="area", required=True)
    db_parser = sub.add_parser("db", help="database schema")
    db_parser.add_argument("action", choices=["upgrade"])
    accounts = sub.add_parser("users", help="user accounts")
    actions = accounts.add_subparsers(dest="action", required=True)
    for name in ("create", "set-password"):
        p = actions.add_parser(name)
        p.add_argument("username")
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of standard input",
        )
    actions.add_parser("list")
    actions.add_parser("delete").add_argument("username")
    ceiling = actions.add_parser(
        "set-max-priority", help="the highest task priority the user may ask for (default 5)"
    )
    ceiling.add_argument("username")
    ceiling.add_argument("priority", type=int, choices=range(10), metavar="0-9")
    retention = sub.add_parser("retention", help="purge old settled tasks")
    retention.add_argument("action", choices=["run"])
    retention.add_argument(
        "--days",
        type=float,
        default=None,
        help="older than this (default: PRIMITIVES_RETENTION_DAYS)",
    )
    return parser


def _no_user(username: str) -> int:
    print(f"no user {username!r}", file=sys.stderr)
    return 1


def _create(db: Session, args: argparse.Namespace) -> int:
    try:
        user = users.create_user(db=db, username=_username(args.username), password=_password(args))
    except users.UserExistsError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"created user {user.username} (id {user.id})")
    return 0


def _list(db: Session, args: argparse.Namespace) -> int:
    for user in users.list_users(db=db):
        print(
            f"{user.id}\t{user.username}\t{user.created_at:%Y-%m-%d %H:%M}"
            f"\tmax priority {user.max_priority}"
        )
    return 0


def _set_password(db: Session, args: argparse.Namespace) -> int:
    if not users.set_password(db=db, username=args.username, password=_password(args)):
        return _no_user(args.username)
    print(f"password of {args.username} changed")
    return 0


def _set_max_priority(db: Session, args: argparse.Namespace) -> int:
    if not users.set_max_priority(db=db, username=args.username, priority=args.priority):
        return _no_user(args.username)
    print(f"{args.username} may use priorities up to {args.priority}")
    return 0


def _delete(db: Session, args: argparse.Namespace) -> int:
    if not users.delete_user(db=db, username=args.username):
        return _no_user(args.username)
    print(f"deleted user {args.username} and their tasks")
    return 0


USER_ACTIONS: dict[str, Callable[[Session, argparse.Namespace], int]] = {
    "create": _create,
    "list": _list,
    "set-password": _set_password,
    "set-max-priority": _set_max_priority,
    "delete": _delete,
}


def _retention(db: Session, days: float) -> int:
    if days <= 0:
        print("no retention age: pass --days or set PRIMITIVES_RETENTION_DAYS", file=sys.stderr)
        return 2
    purged = purge_settled_before(db=db, moment=utcnow() - timedelta(days=days))
    print(f"purged {purged} tasks settled more than {days:g} days ago")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    if args.area == "db":
        upgrade_database(settings.database_url)
        print("database is at the latest schema")
        return 0
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as db:
            if args.area == "retention":
                return _retention(db, settings.retention_days if args.days is None else args.days)
            return USER_ACTIONS[args.action](db, args)
    finally:
        engine.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
