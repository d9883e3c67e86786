"""The ``objstore`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import objstore
from objstore.cli.parser import build_parser

__all__ = ["build_parser", "main"]

_COMMAND_EXTRA = {
    "serve": "server",
    "push": "client",
    "pull": "client",
    "cp": "client",
    "bench": "bench",
}
_MODULE_EXTRA = {
    "httpx": "client",
    "rich": "client",
    "platformdirs": "client",
    "isal": "client",
    "starlette": "server",
    "uvicorn": "server",
    "multipart": "server",
    "python_multipart": "server",
    "matplotlib": "bench",
    "specklepy": "specklepy",
}


def _missing_extra(command: str, exc: ModuleNotFoundError) -> str | None:
    """The install line for the optional extra a command lacks, or None if that is not it."""
    module = (exc.name or "").split(".")[0]
    if module not in _MODULE_EXTRA:
        return None
    extra = _COMMAND_EXTRA.get(command) or _MODULE_EXTRA[module]
    return (
        f"objstore {command} needs {module}, from the {extra!r} extra: "
        f"pip install 'objstore[{extra}]'"
    )


_RESUMABLE = {"push", "pull", "cp"}  # commands a rerun continues (see main's Ctrl+C)


def _refuse_unplaced_words(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error for a word an admin action has no place for, which argparse
    would otherwise drop without a word (`token create alice` made a token for admin)."""
    if args.command == "token" and args.action != "revoke" and args.token_id:
        hint = ""
        if args.action == "create":
            hint = f" (a token for {args.token_id}: --user {args.token_id})"
        parser.error(f"token {args.action} takes no {args.token_id!r}{hint}")
    if args.command == "project" and args.action != "member":
        listed = args.name if args.action == "list" else None
        extra = [w for w in (listed, args.user, args.role) if w]
        if extra:
            hint = f" (the owner: --owner {args.user})" if args.action == "create" else ""
            parser.error(f"project {args.action} takes no {' '.join(map(repr, extra))}{hint}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "project" and args.action != "list" and not args.name:
        parser.error(f"project {args.action} needs a project name")
    if args.command == "project" and args.action == "member" and not (args.user and args.role):
        parser.error("project member NAME USER ROLE")
    if args.command == "token" and args.action == "revoke" and not args.token_id:
        parser.error("token revoke needs the token or its id")
    _refuse_unplaced_words(parser, args)
    try:
        code: int = args.func(args)
    except BrokenPipeError:  # output piped into head & co.: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:  # Ctrl+C: requests in flight were let finish; no traceback
        again = " (run it again: it moves only what is still missing)"
        print(
            f"objstore: interrupted{again if args.command in _RESUMABLE else ''}", file=sys.stderr
        )
        return 130
    except ModuleNotFoundError as exc:
        hint = _missing_extra(args.command, exc)
        if hint is None:
            raise
        print(hint, file=sys.stderr)
        return 2
    except (objstore.ObjstoreError, ValueError, OSError) as exc:
        print(f"objstore: {exc}", file=sys.stderr)
        return 2
    return code
