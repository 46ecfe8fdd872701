"""`orbridge recordings ...`: list and export recordings from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROG = "orbridge recordings"


def add_recordings_parser(
    sub: Any, settings_flags: Callable[[argparse.ArgumentParser], None]
) -> None:
    p = sub.add_parser("recordings", help="list and export recorded sessions")
    actions = p.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list the recordings in the recordings directory")
    settings_flags(listing)
    listing.add_argument("--recordings-dir", dest="recordings_dir")
    listing.add_argument("--json", action="store_true")

    export = actions.add_parser(
        "export",
        help="export a recording's main video to an H.264 MP4",
        description="Export the main video (the laparoscope) of a recording to an H.264 MP4, "
        "optionally with the annotations and a vitals strip burned in, and de-identified.",
    )
    settings_flags(export)
    export.add_argument("id", help="recording id (see `orbridge recordings list`)")
    export.add_argument(
        "--burn-in",
        dest="burn_in",
        action="store_true",
        help="draw the annotations (and a vitals strip) into the picture",
    )
    export.add_argument(
        "--no-vitals", dest="vitals", action="store_false", help="no vitals strip with --burn-in"
    )
    export.add_argument(
        "--deidentify",
        action="store_true",
        help="mask the patient-data regions and blur out-of-body frames",
    )
    export.add_argument(
        "--mask",
        action="append",
        default=[],
        metavar="X,Y,W,H",
        help="region to mask with --deidentify, fractions of the picture (repeatable; "
        "default: the deidentify_regions setting)",
    )
    export.add_argument("--output", "-o", help="the MP4 to write (default: ./<id>.mp4)")
    export.add_argument("--recordings-dir", dest="recordings_dir")
    export.add_argument("--crf", type=int, default=20, help="x264 quality, 0-51 (default 20)")
    export.add_argument("--preset", default="veryfast", help="x264 speed preset (default veryfast)")


def run_recordings(args: argparse.Namespace, settings: Any) -> int:
    if args.action == "list":
        return _list(args, settings)
    if args.action == "export":
        return _export(args, settings)
    print(f"{PROG}: unknown action {args.action}", file=sys.stderr)
    return 2


def _list(args: argparse.Namespace, settings: Any) -> int:
    import json

    from orbridge.recording.library.store import RecordingStore

    manifests = RecordingStore(settings.recordings_path).list()
    if args.json:
        print(json.dumps([m.to_json() for m in manifests]))
        return 0
    for m in manifests:
        where = f"{m.procedure or '-'}  ({m.hospital or '-'})"
        print(f"{m.id}  {m.state:<11} {m.duration:8.1f} s  {where}")
    return 0


_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
    "veryslow",
)  # fmt: skip


def parse_mask(text: str) -> tuple[float, float, float, float]:
    """``x,y,w,h`` fractions of the picture (ValueError with the reason)."""
    from orbridge.recording.export.deidentify import check_region

    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise ValueError(f"--mask {text!r}: expected x,y,w,h (four fractions)")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--mask {text!r}: not numbers") from None
    try:
        return check_region(values)
    except ValueError as exc:
        raise ValueError(f"--mask {text!r}: {exc}") from None


def _audit_export(settings: Any, recording_id: str, output: Path, options: Any) -> bool:
    """The export in the audit trail (the server's file, in the data directory), before a
    frame is read: no export goes unrecorded, so one that cannot be recorded does not run."""
    import getpass
    import os
    import socket

    from orbridge.signaling.audit import append_now

    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid (a container)
        user = str(os.getuid())
    try:
        append_now(settings.audit_path, f"cli@{socket.gethostname()}", "recording_exported",
                   recording=recording_id, output=str(output.absolute()), user=user,
                   pid=os.getpid(), burn_in=options.burn_in, deidentify=options.deidentify,
                   regions=options.regions_source if options.deidentify else None)  # fmt: skip
    except OSError as exc:
        print(f"{PROG}: cannot write the audit trail {settings.audit_path}: "
              f"{exc.strerror or exc}; not exporting", file=sys.stderr)  # fmt: skip
        return False
    return True


def _export(args: argparse.Namespace, settings: Any) -> int:
    # Heavy modules (PyAV, OpenCV) only here, so `orbridge serve` starts without them.
    from orbridge.recording.export.exporter import (
        ExportError,
        ExportInputError,
        ExportOptions,
        export_recording,
    )
    from orbridge.recording.export.progress import ProgressBar
    from orbridge.recording.manifest import check_recording_id

    try:
        check_recording_id(args.id)
        masks = [parse_mask(m) for m in args.mask]
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if masks and not args.deidentify:
        print(f"{PROG}: --mask needs --deidentify", file=sys.stderr)
        return 2
    if not 0 <= args.crf <= 51 or args.preset not in _PRESETS:
        print(f"{PROG}: --crf is 0-51 and --preset one of {', '.join(_PRESETS)}", file=sys.stderr)
        return 2
    regions = masks or [tuple(r) for r in settings.deidentify_regions]
    source = "flags" if masks else "settings" if regions else "none"
    options = ExportOptions(
        burn_in=args.burn_in,
        vitals=args.vitals,
        deidentify=args.deidentify,
        regions=list(regions) if args.deidentify else [],
        regions_source=source,
        crf=args.crf,
        preset=args.preset,
    )
    if args.deidentify and not regions:
        print(
            f"{PROG}: warning: no de-identification regions configured (--mask or the "
            "deidentify_regions setting): burned-in patient data will NOT be masked; "
            "only out-of-body frames are blurred",
            file=sys.stderr,
        )
    output = Path(args.output) if args.output else Path.cwd() / f"{args.id}.mp4"
    if not _audit_export(settings, args.id, output, options):
        return 1
    bar = ProgressBar(sys.stderr)
    try:
        result = export_recording(settings.recordings_path, args.id, output, options, progress=bar)
    except ExportInputError as exc:
        bar.close()
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except ExportError as exc:
        bar.close()
        print(f"{PROG}: export failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.close()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unexpected library error: still a clear exit 1
        bar.close()
        print(f"{PROG}: export failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    bar.close()
    print(result.summary())
    return 0
