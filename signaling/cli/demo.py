"""`orbridge serve --demo`: a newcomer's first five minutes.

Starts, next to the server, a synthetic OR (the laparoscopy picture, as `orbridge publish
--synthetic`) and a synthetic patient (`orbridge vitals --synthetic`) in a demo room, as child
processes speaking the normal protocol, and prints join links for an expert, the OR, a trainee
and a moderator (who can record the session), and a link to the recordings library. The
children stop with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

import aiohttp
from aiohttp import web

from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.settings import Settings

log = logging.getLogger("orbridge.demo")
ROOM = "demo"
LINKS = (
    (Role.EXPERT, "Dr Wang", "dr-wang"),
    (Role.SURGEON, "County OR", "county-or"),
    (Role.TRAINEE, "Student Chen", "trainee-1"),
    (Role.MODERATOR, "Dr Li", "moderator-1"),
)


def join_links(settings: Settings, secret: str) -> list[tuple[str, str]]:
    out = []
    for role, name, identity in LINKS:
        token = tokens.mint(secret, room=ROOM, role=role, name=name, identity=identity, ttl_s=86400)
        out.append((f"{role.value} ({name})", tokens.join_url(settings.base_url, ROOM, token)))
    # The library: every recording a trainee may see (consent given, or not required).
    library = tokens.mint(secret, room=tokens.LIBRARY_ROOM, role=Role.TRAINEE,
                          name="Student Chen", identity="trainee-1", ttl_s=86400,
                          library=["*"])  # fmt: skip
    out.append(("recordings library", tokens.library_url(settings.base_url, library)))
    return out


class Demo:
    def __init__(self, settings: Settings, secret: str) -> None:
        self.settings = settings
        self.secret = secret
        self.children: list[asyncio.subprocess.Process] = []
        self._task: asyncio.Task[None] | None = None

    async def _wait_for_server(self) -> bool:
        url = f"http://127.0.0.1:{self.settings.port}/healthz"
        async with aiohttp.ClientSession() as session:
            for _ in range(100):  # 10 s at most
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return True
                await asyncio.sleep(0.1)
        return False

    async def _run(self) -> None:
        if not await self._wait_for_server():
            log.error("demo: the server did not come up; no synthetic OR or patient")
            return
        url = f"http://127.0.0.1:{self.settings.port}"
        env = {**os.environ, "ORBRIDGE_SECRET": self.secret}  # not on a command line (ps)
        publish = ["publish", "--url", url, "--room", ROOM, "--synthetic", "--size", "1280x720",
                   "--bitrate", "2500k", "--audio", "--identity", "synthetic-or"]  # fmt: skip
        vitals = ["vitals", "--synthetic", "--url", url, "--room", ROOM, "--identity", "monitor-1"]
        commands = [publish, vitals]
        for args in commands:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "orbridge.signaling.cli", *args, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            self.children.append(child)
        links = join_links(self.settings, self.secret)
        lines = "\n".join(f"  {label:24s} {link}" for label, link in links)
        print(f"\norbridge demo: a synthetic operation is live in room {ROOM!r}. Open:\n{lines}\n"
              "The moderator starts and stops the recording; it then appears in the library.\n",
              flush=True)  # fmt: skip

    async def start(self, _: web.Application) -> None:
        self._task = asyncio.create_task(self._run(), name="demo")

    async def stop(self, _: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for child in self.children:
            if child.returncode is None:
                child.terminate()
        for child in self.children:
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(child.wait(), 5)
            if child.returncode is None:
                child.kill()


def enable_demo(app: web.Application, settings: Settings, secret: str) -> Demo:
    demo = Demo(settings, secret)
    app.on_startup.append(demo.start)
    app.on_shutdown.insert(0, demo.stop)
    return demo
