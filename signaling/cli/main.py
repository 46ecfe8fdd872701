"""The `orbridge` command: serve, token, and the clients and tools behind it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from orbridge.rooms import tokens
from orbridge.rooms.roles import Grant, Role
from orbridge.signaling.settings import Settings, SettingsError, load_settings

# Flags whose value every user of the machine can read (ps, /proc/<pid>/cmdline): their use is
# warned about, naming where the value belongs instead. (argparse dest, flag, the alternative)
_VISIBLE_SECRETS = (
    ("secret", "--secret", "ORBRIDGE_SECRET or --secret-file"),
    ("api_keys", "--api-key", "ORBRIDGE_API_KEYS or the config file"),
    ("turn_credential", "--turn-credential", "ORBRIDGE_TURN_CREDENTIAL or the config file"),
)


def secret_flag_warnings(args: argparse.Namespace) -> list[str]:
    """One warning per secret given as a command-line flag (any subcommand)."""
    return [
        f"{flag} is visible to every user of this machine (ps, /proc/<pid>/cmdline): "
        f"use {alternative} instead"
        for dest, flag, alternative in _VISIBLE_SECRETS
        if getattr(args, dest, None)
    ]


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML settings file (or ORBRIDGE_CONFIG)")
    parser.add_argument(
        "--secret", help="token signing secret (prefer ORBRIDGE_SECRET or --secret-file)"
    )
    parser.add_argument(
        "--secret-file",
        dest="secret_file",
        metavar="PATH",
        help="read the secret from this file, mode 0600 (or ORBRIDGE_SECRET_FILE)",
    )
    parser.add_argument("--data-dir", dest="data_dir", help="where the generated secret is kept")
    parser.add_argument(
        "--public-url", dest="public_url", help="base URL printed in join links (behind a proxy)"
    )


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the orbridge server")
    _settings_flags(p)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    p.add_argument(
        "--redis", dest="redis_url", help="redis://host:port/db for presence and cross-node fan-out"
    )
    p.add_argument("--node-id", dest="node_id", help="this node's name in presence")
    p.add_argument("--presence-ttl", dest="presence_ttl", type=float, help="seconds (<= 15)")
    p.add_argument("--heartbeat-interval", dest="heartbeat_interval", type=float, help="seconds")
    p.add_argument(
        "--room-empty-timeout",
        dest="room_empty_timeout",
        type=float,
        help="seconds a room stays empty before its consultation ends (default 300)",
    )
    p.add_argument(
        "--max-token-ttl",
        dest="max_token_ttl",
        type=tokens.parse_ttl,
        help="longest lifetime of a join token this server accepts: 90s, 15m, 2h, 1d (default 1d)",
    )
    p.add_argument("--log-format", dest="log_format", choices=["text", "json"])
    p.add_argument("--log-level", dest="log_level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--demo",
        action="store_true",
        help="start a synthetic OR and patient in room 'demo' and print join links",
    )
    p.add_argument("--mllp-port", dest="mllp_port", type=int, help="HL7 v2 MLLP listener port")
    p.add_argument("--mllp-host", dest="mllp_host", help="MLLP listen address (default: --host)")
    p.add_argument(
        "--mllp-bind",
        dest="mllp_bindings",
        action="append",
        help="DEVICE=ROOM: route a monitor's ORU messages to a room (repeatable)",
    )
    p.add_argument("--mllp-room", dest="mllp_default_room", help="room for unbound devices")
    p.add_argument(
        "--mllp-allow",
        dest="mllp_allow",
        action="append",
        help="CIDRs that may connect to MLLP, comma-separated (repeatable; default loopback only:"
        " 127.0.0.0/8,::1/128)",
    )
    p.add_argument(
        "--mllp-max-per-peer",
        dest="mllp_max_per_peer",
        type=int,
        help="MLLP connections per address; a newer one replaces the one idle longest (default 8)",
    )
    p.add_argument(
        "--mllp-idle-timeout",
        dest="mllp_idle_timeout",
        type=float,
        help="seconds an MLLP connection may go without an ORU^R01 message (default 180)",
    )
    p.add_argument(
        "--trusted-proxy",
        dest="trusted_proxies",
        action="append",
        help="CIDRs of reverse proxies whose X-Forwarded-For names the client in the audit"
        " trail, comma-separated (repeatable; default none: the socket's peer is named)",
    )
    p.add_argument("--video-codec", dest="video_codec", choices=["VP8", "H264"])
    p.add_argument(
        "--keyframe-interval",
        dest="keyframe_interval",
        type=float,
        help="seconds between keyframe requests per track (default 0.5)",
    )
    p.add_argument(
        "--track-stall-timeout",
        dest="track_stall_timeout",
        type=float,
        help="seconds without a frame, publisher still connected, before the room is told"
        " track_stalled (default 1.5, at most 30)",
    )
    p.add_argument(
        "--ice-address",
        dest="ice_addresses",
        action="append",
        help="local address for WebRTC candidates (repeatable; default: the listen address)",
    )
    p.add_argument(
        "--announced-address",
        dest="announced_address",
        help="public address written into WebRTC candidates (behind NAT)",
    )
    p.add_argument("--stun", dest="stun_urls", action="append", help="stun:host:port (repeatable)")
    p.add_argument("--turn", dest="turn_urls", action="append", help="turn:host:port (repeatable)")
    p.add_argument("--turn-username", dest="turn_username")
    p.add_argument(
        "--turn-credential",
        dest="turn_credential",
        help="TURN password (prefer ORBRIDGE_TURN_CREDENTIAL or the config file)",
    )
    p.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        help="API key for /api (repeatable; prefer ORBRIDGE_API_KEYS or the config file)",
    )
    p.add_argument(
        "--recordings-dir", dest="recordings_dir", help="where recordings go (default: data dir)"
    )
    p.add_argument(
        "--record-room",
        dest="record_rooms",
        action="append",
        help="room policy: record rooms matching this glob from the first track (repeatable)",
    )
    p.add_argument(
        "--record-consent",
        dest="record_consent",
        choices=["written", "verbal", "pending", "not_required"],
        help="consent state of policy recordings (default pending: out of the library until set)",
    )


def _token_parser(sub: Any) -> None:
    p = sub.add_parser(
        "token", help="mint a join token (or a library token) and print the browser URL"
    )
    _settings_flags(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--room", help="the room this join token enters")
    target.add_argument(
        "--library",
        action="append",
        metavar="GLOB",
        help="a library token for the recordings of rooms matching this glob, e.g. 'or-*'"
        " (repeatable, up to 16); it cannot join a room",
    )
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--name", required=True, help='display name, e.g. "Dr Wang"')
    p.add_argument("--identity", help="stable participant id (default: generated)")
    p.add_argument("--ttl", default="2h", help="lifetime: 90s, 15m, 2h, 1d (default 2h)")
    p.add_argument(
        "--grant",
        action="append",
        default=[],
        choices=[g.value for g in Grant],
        help="an optional grant on top of the role's defaults (e.g. publish_video for an expert)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orbridge", description="Real-time surgical teleconsultation server"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _token_parser(sub)
    from orbridge.signaling.cli.loadtest import add_loadtest_parser

    add_loadtest_parser(sub)
    from orbridge.signaling.cli.publish import add_publish_parser  # stdlib only: cheap for `serve`

    add_publish_parser(sub)
    from orbridge.signaling.cli.vitals import add_vitals_parser  # stdlib only, like publish

    add_vitals_parser(sub)
    from orbridge.signaling.cli.recordings import (
        add_recordings_parser,  # argparse only: heavy imports run later
    )

    add_recordings_parser(sub, _settings_flags)
    from orbridge.signaling.cli.audit import add_audit_parser

    add_audit_parser(sub)
    return parser


def _load(args: argparse.Namespace, fields: Sequence[str]) -> Settings:
    flags = {name: getattr(args, name, None) for name in fields}
    return load_settings(flags=flags, config_file=args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from orbridge.signaling.app import create_app
    from orbridge.signaling.logs import setup_logging

    settings = _load(
        args,
        [
            "secret", "secret_file", "data_dir", "public_url", "host", "port", "redis_url",
            "node_id", "presence_ttl", "heartbeat_interval", "room_empty_timeout", "max_token_ttl",
            "log_format", "log_level", "api_keys",
            "video_codec", "ice_addresses", "announced_address", "stun_urls", "turn_urls",
            "turn_username", "turn_credential", "keyframe_interval", "track_stall_timeout",
            "mllp_port", "mllp_host", "mllp_bindings", "mllp_default_room", "mllp_allow",
            "mllp_max_per_peer", "mllp_idle_timeout", "trusted_proxies",
            "recordings_dir", "record_rooms", "record_consent",
        ],
    )  # fmt: skip
    setup_logging(settings.log_format, settings.log_level)
    log = logging.getLogger("orbridge")
    for warning in secret_flag_warnings(args):
        log.warning("%s", warning)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    app = create_app(settings)
    if args.demo:
        from orbridge.signaling.cli.demo import enable_demo
        from orbridge.signaling.node import NODE

        enable_demo(app, settings, app[NODE].secret)
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_grace,
            print=None,
            access_log=None,
        )
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    import json

    settings = _load(args, ["secret", "secret_file", "data_dir", "public_url"])
    try:
        ttl = tokens.parse_ttl(args.ttl)
        if ttl > settings.max_token_ttl:
            raise ValueError(
                f"--ttl {args.ttl} is longer than the server accepts (max_token_ttl "
                f"{settings.max_token_ttl // 3600} h); ask for a shorter one: the consoles "
                "refresh their token before it expires"
            )
        token = tokens.mint(
            settings.resolved_secret(),
            room=args.room or tokens.LIBRARY_ROOM,
            role=Role(args.role),
            name=args.name,
            identity=args.identity,
            ttl_s=ttl,
            extra_grants={Grant(g) for g in args.grant},
            library=args.library,
        )
    except ValueError as exc:
        print(f"orbridge token: {exc}", file=sys.stderr)
        return 2
    if args.library:
        url = tokens.library_url(settings.base_url, token)
    else:
        url = tokens.join_url(settings.base_url, args.room, token)
    if args.json:
        print(json.dumps({"token": token, "url": url}))
    else:
        print(f"token: {token}\nurl:   {url}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":  # serve logs them, once its logging is set up
        for warning in secret_flag_warnings(args):
            print(f"orbridge {args.command}: warning: {warning}", file=sys.stderr, flush=True)
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "loadtest":
            from orbridge.signaling.cli.loadtest import run_loadtest

            return asyncio.run(run_loadtest(args))
        if args.command == "publish":
            from orbridge.signaling.cli.publish import run_publish

            return asyncio.run(run_publish(args))
        if args.command == "recordings":
            from orbridge.signaling.cli.recordings import run_recordings

            fields = ["secret", "secret_file", "data_dir", "recordings_dir"]
            return run_recordings(args, _load(args, fields))
        if args.command == "audit":
            from orbridge.signaling.cli.audit import run_audit

            return run_audit(args, _load(args, ["data_dir"]))
        if args.command == "vitals":
            from orbridge.signaling.cli.vitals import run_vitals

            return asyncio.run(run_vitals(args))
        return cmd_token(args)
    except SettingsError as exc:
        print(f"orbridge: bad settings: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
