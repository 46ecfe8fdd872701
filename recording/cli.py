"""`orbridge recordings ...`: list and export recordings from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def add_recordings_parser(
    sub: Any, settings_flags: Callable[[argparse.ArgumentParser], None]
) -> None:
    p = sub.add_parser("recordings", help="list and export recorded sessions")
    actions = p.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list the recordings in the recordings directory")
    settings_flags(listing)
    listing.add_argument("--recordings-dir", dest="recordings_dir")
    listing.add_argument("--json", action="store_true")


def run_recordings(args: argparse.Namespace, settings: Any) -> int:
    if args.action == "list":
        return _list(args, settings)
    print(f"orbridge recordings: unknown action {args.action}", file=sys.stderr)
    return 2


def _list(args: argparse.Namespace, settings: Any) -> int:
    import json

    from recording.store import RecordingStore

    manifests = RecordingStore(settings.recordings_path).list()
    if args.json:
        print(json.dumps([m.to_json() for m in manifests]))
        return 0
    for m in manifests:
        where = f"{m.procedure or '-'}  ({m.hospital or '-'})"
        print(f"{m.id}  {m.state:<11} {m.duration:8.1f} s  {where}")
    return 0
