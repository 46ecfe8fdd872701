"""Regenerate the README's screenshots from `orbridge serve --demo` in headless Chromium.

    .venv/bin/python scripts/readme_screenshots.py

Starts the demo on a free loopback port, opens the expert and trainee links, draws on the
synthetic laparoscope as an expert would, and saves docs/screenshots/{expert,trainee}.png.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import free_port  # noqa: E402

ARGS = ["--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--allow-loopback-in-peer-connection"]  # fmt: skip


async def main() -> None:
    port = free_port()
    data = tempfile.mkdtemp()
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, read line by line below
        [sys.executable, "-m", "orbridge.signaling.cli", "serve", "--demo", "--port", str(port),
         "--data-dir", data], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    links: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 30
        assert server.stdout is not None
        while len(links) < 3 and time.monotonic() < deadline:
            line = server.stdout.readline()
            match = re.match(r"\s+(\w+) \(.+?\)\s+(http://\S+)", line)
            if match:
                links[match.group(1)] = match.group(2)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            expert = await context.new_page()
            await expert.goto(links["expert"])
            video = expert.locator('[data-testid="tile"][data-source="laparoscope"] video')
            await video.wait_for(timeout=20000)
            await asyncio.sleep(4)  # frames and vitals flowing, the ECG strip filled
            canvas = expert.locator('[data-testid="tile"][data-source="laparoscope"] canvas')
            box = await canvas.bounding_box()
            assert box is not None
            await expert.get_by_test_id("tool-arrow").click()
            x, y, w, h = box["x"], box["y"], box["width"], box["height"]
            await expert.mouse.move(x + 0.30 * w, y + 0.70 * h)
            await expert.mouse.down()
            await expert.mouse.move(x + 0.48 * w, y + 0.52 * h, steps=8)
            await expert.mouse.up()
            await expert.get_by_test_id("tool-circle").click()
            await expert.mouse.move(x + 0.60 * w, y + 0.45 * h)
            await expert.mouse.down()
            await expert.mouse.move(x + 0.66 * w, y + 0.52 * h, steps=8)
            await expert.mouse.up()
            await asyncio.sleep(1)
            out = ROOT / "docs" / "screenshots"
            await expert.screenshot(path=str(out / "expert.png"))
            trainee = await context.new_page()
            await trainee.goto(links["trainee"])
            await trainee.locator('[data-testid="tile"][data-source="laparoscope"] video').wait_for(
                timeout=20000
            )
            await asyncio.sleep(4)
            await trainee.screenshot(path=str(out / "trainee.png"))
            await browser.close()
    finally:
        server.terminate()
        server.wait(15)


if __name__ == "__main__":
    asyncio.run(main())
