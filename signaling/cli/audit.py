"""`orbridge audit verify|tail`: check the audit trail's hash chain, read its last entries."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

PROG = "orbridge audit"


def add_audit_parser(sub: Any) -> None:
    p = sub.add_parser("audit", help="check and read the audit trail (<data dir>/audit.jsonl)")
    actions = p.add_subparsers(dest="action", required=True)
    verify = actions.add_parser(
        "verify",
        help="check the hash chain: exit 0 if sound, 1 naming the first broken entry",
        description="Check every entry's hash and its link to the one before. Prints 'ok: N "
        "entries, last hash H' (exit 0) or 'broken at line L (seq S): reason' (exit 1).",
    )
    tail = actions.add_parser("tail", help="print the last entries")
    tail.add_argument("-n", dest="lines", type=int, default=20, help="how many (default 20)")
    for action in (verify, tail):
        action.add_argument("--config", help="TOML settings file (or ORBRIDGE_CONFIG)")
        action.add_argument("--data-dir", dest="data_dir", help="the data directory it is in")
        action.add_argument("--file", help="an audit file elsewhere (a copy, an archive)")


def run_audit(args: argparse.Namespace, settings: Any) -> int:
    from orbridge.signaling.audit import tail_lines, verify

    path = Path(args.file) if args.file else settings.audit_path
    try:
        if args.action == "tail":
            for line in tail_lines(path, args.lines):
                sys.stdout.write(line.decode("utf-8", "replace").rstrip("\n") + "\n")
            return 0
        result = verify(path)
    except FileNotFoundError:
        print(f"{PROG}: there is no audit trail at {path}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(result.summary())
    for note in result.notes:
        print(f"note: {note}")
    return 0 if result.ok else 1
