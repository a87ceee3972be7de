"""``primitives``: the platform from a shell.

    primitives login                      # asks for user name and password; keeps the token
    primitives submit a.jpg b.png --wait  # progress bar, then one result per line (JSON)
    primitives submit --image-url https://example.com/a.jpg  # the platform fetches it
    primitives list [--status done]
    primitives result 7 [--wait]
    primitives visualize 7 -o boxes.png
    primitives cancel 7
    primitives retry 7                    # a failed or canceled task, again, as a new one
    primitives delete 7
    primitives me
    primitives keys create "nightly batch"  # prints the key once: keep it as PRIMITIVES_API_KEY
    primitives keys list
    primitives keys revoke 3

The platform's URL comes from ``--url``, ``PRIMITIVES_URL`` or the last login; the
credential from ``PRIMITIVES_API_KEY`` (a key, for programs), ``PRIMITIVES_TOKEN`` or the
file ``login`` writes in the user's config directory (mode 0600). Keys are made and listed
with a login's token only.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs
from tqdm import tqdm

from primitives_client.client import Client, PrimitivesError

DEFAULT_URL = "http://127.0.0.1:8000"


def credentials_path() -> Path:
    return Path(platformdirs.user_config_dir("primitives")) / "credentials.json"


def load_credentials() -> dict[str, Any]:
    try:
        return dict(json.loads(credentials_path().read_text()))
    except (OSError, ValueError):
        return {}


def save_credentials(url: str, token: str) -> Path:
    """Write the URL and token, readable by the user alone (0600, created so, never wider)."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        json.dump({"url": url, "token": token}, f)
    return path


def _print(value: Any) -> None:
    print(json.dumps(value, indent=None, separators=(", ", ": ")))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="primitives", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", help=f"the platform (default: PRIMITIVES_URL, the last login's, or {DEFAULT_URL})"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    login = sub.add_parser("login", help="log in and keep the token")
    login.add_argument("-u", "--username")
    login.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    submit = sub.add_parser("submit", help="submit images (one task each)")
    submit.add_argument("images", nargs="*", type=Path)
    submit.add_argument(
        "--image-url", help="an http(s) URL of a JPEG or PNG for the platform to fetch"
    )
    submit.add_argument("--wait", action="store_true", help="wait and print the results")
    submit.add_argument("--detection-model", type=int)
    submit.add_argument("--classification-model", type=int)
    submit.add_argument("--webhook", help="URL to POST each signed result to")
    submit.add_argument("--timeout", type=float, default=600.0)
    listing = sub.add_parser("list", help="your tasks")
    listing.add_argument("--status")
    listing.add_argument("--after-id", type=int, default=0)
    listing.add_argument("--limit", type=int)
    result = sub.add_parser("result", help="a task's result")
    result.add_argument("id", type=int)
    result.add_argument("--wait", action="store_true", help="until it is done")
    visualize = sub.add_parser("visualize", help="save the picture of a result")
    visualize.add_argument("id", type=int)
    visualize.add_argument("-o", "--output", type=Path, required=True)
    visualize.add_argument("--min-probability", type=float, default=0.0)
    for name, text in (
        ("cancel", "cancel a task"),
        ("retry", "run a failed or canceled task again, as a new task"),
        ("delete", "delete a task"),
        ("webhooks", "a task's webhook deliveries"),
    ):
        sub.add_parser(name, help=text).add_argument("id", type=int)
    sub.add_parser("me", help="your user name and webhook secret")
    keys = sub.add_parser("keys", help="API keys for programs").add_subparsers(
        dest="action", required=True
    )
    keys.add_parser("create", help="make a key; printed once").add_argument("name")
    keys.add_parser("list", help="your keys, without their secrets")
    keys.add_parser("revoke", help="revoke a key at once").add_argument("id", type=int)
    return parser


def _login(client: Client, args: argparse.Namespace, url: str) -> int:
    username = args.username or input("user name: ")
    password = (
        sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
    )
    client.login(username, password)
    path = save_credentials(url, client.token or "")
    print(f"logged in to {url} as {username}; token kept in {path}", file=sys.stderr)
    return 0


def _submit(client: Client, args: argparse.Namespace) -> int:
    options = {
        "detection_model_id": args.detection_model,
        "classification_model_id": args.classification_model,
        "webhook": args.webhook,
    }
    if bool(args.images) == bool(args.image_url):
        print("give image files or --image-url, one of them", file=sys.stderr)
        return 2
    if args.image_url:
        waiting = {"wait": True, "timeout": args.timeout} if args.wait else {}
        _print(client.submit(image_url=args.image_url, **waiting, **options))
        return 0
    many = len(args.images) > 1
    if args.wait and not many:  # one request answers with the result
        _print(client.submit(args.images[0], wait=True, timeout=args.timeout, **options))
        return 0
    with tqdm(
        total=len(args.images) * (2 if args.wait and many else 1),
        unit="step",
        disable=not many or not sys.stderr.isatty(),
        file=sys.stderr,
    ) as bar:
        created = [client.submit(p, **options) for p in args.images if bar.update(1) is None]
        for task in created:
            if args.wait:
                _print(client.wait(task["id"], timeout=args.timeout))
                bar.update(1)
            else:
                _print(task)
    return 0


def _visualize(client: Client, args: argparse.Namespace) -> int:
    client.visualize(
        args.id,
        args.output,
        min_probability=args.min_probability,
        jpeg=args.output.suffix.lower() in (".jpg", ".jpeg"),
    )
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _keys(client: Client, args: argparse.Namespace) -> int:
    if args.action == "create":
        _print(client.create_key(args.name))
        print("the key is shown this once: keep it (PRIMITIVES_API_KEY)", file=sys.stderr)
    elif args.action == "list":
        for key in client.list_keys():
            _print(key)
    else:
        client.revoke_key(args.id)
        print(f"revoked key {args.id}", file=sys.stderr)
    return 0


def _printed(call: Callable[[Client, argparse.Namespace], Any], *, each: bool = False) -> Command:
    """A command that prints what one client call answers, as one line (``each``: a line
    for each item it answers)."""

    def command(client: Client, args: argparse.Namespace) -> int:
        answer = call(client, args)
        for item in answer if each else [answer]:
            _print(item)
        return 0

    return command


Command = Callable[[Client, argparse.Namespace], int]
COMMANDS: dict[str, Command] = {
    "submit": _submit,
    "list": _printed(
        lambda c, a: c.list(status=a.status, after_id=a.after_id, limit=a.limit), each=True
    ),
    "result": _printed(lambda c, a: c.wait(a.id) if a.wait else c.result(a.id)),
    "visualize": _visualize,
    "cancel": _printed(lambda c, a: c.cancel(a.id)),
    "retry": _printed(lambda c, a: c.retry(a.id)),
    "delete": _printed(lambda c, a: c.delete(a.id)),
    "webhooks": _printed(lambda c, a: c.webhooks(a.id)),
    "me": _printed(lambda c, a: c.me()),
    "keys": _keys,
}


def run(args: argparse.Namespace) -> int:
    saved = load_credentials()
    url = args.url or os.environ.get("PRIMITIVES_URL") or saved.get("url") or DEFAULT_URL
    token = (
        os.environ.get("PRIMITIVES_API_KEY")
        or os.environ.get("PRIMITIVES_TOKEN")
        or (saved.get("token") if saved.get("url") == url else None)
    )
    with Client(url, token) as client:
        if args.command == "login":
            return _login(client, args, url)
        if client.token is None:
            print(f"not logged in to {url}: run `primitives login` first", file=sys.stderr)
            return 2
        return COMMANDS[args.command](client, args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except BrokenPipeError:
        # The reader left (`primitives list | head`): not an error. Python would complain
        # again when it flushes stdout at exit, so stdout goes to /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except PrimitivesError as exc:
        print(f"error {exc.status_code}: {exc.detail}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
