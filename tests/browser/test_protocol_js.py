"""static/js/protocol.js exercised in the browser: the participant list, the token helpers and
the request/error mapping against a real server."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.conftest import Pages, WebNode

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def module_page(pages: Pages, node: WebNode) -> Page:
    """A page of this origin (so its CSP applies) with protocol.js imported as `P`."""
    page = await pages.new_page(node.url + "/")
    await page.evaluate("async () => { window.P = await import('/static/js/protocol.js'); }")
    return page


def participant(identity: str, joined_at: int, **kw: Any) -> dict[str, Any]:
    return {"identity": identity, "name": identity, "role": "expert", "node": "n",
            "quality": "unknown", "joined_at": joined_at, **kw}  # fmt: skip


async def test_participant_list_applies_presence_events(web_node: WebNode, pages: Pages) -> None:
    page = await module_page(pages, web_node)
    result = await page.evaluate(
        """([a, b, c, b2, a2]) => {
            const list = new P.ParticipantList();
            let changes = 0;
            list.onChange(() => changes++);
            const ids = () => list.list().map(p => p.identity + ":" + p.quality);
            const steps = [];
            list.reset([b, a]);                                       steps.push(ids());
            list.apply("participant_joined", {participant: c});        steps.push(ids());
            list.apply("participant_updated", {participant: a2});      steps.push(ids());
            list.apply("participant_joined", {participant: b2});       steps.push(ids());
            list.apply("participant_left", {identity: "c", reason: "left"}); steps.push(ids());
            list.apply("participant_left", {identity: "nobody", reason: "left"});
            const other = list.apply("removed", {reason: "removed"});
            return {steps, changes, other, size: list.size, got: list.get("a").quality};
        }""",
        [
            participant("a", 100),
            participant("b", 200),
            participant("c", 300),
            participant("b", 400, quality="fair"),  # same identity joined again (another tab)
            participant("a", 100, quality="good"),
        ],
    )
    assert result["steps"] == [
        ["a:unknown", "b:unknown"],
        ["a:unknown", "b:unknown", "c:unknown"],
        ["a:good", "b:unknown", "c:unknown"],
        ["a:good", "c:unknown", "b:fair"],  # upserted by identity, now in join order
        ["a:good", "b:fair"],
    ]
    assert result["changes"] == 5  # a departure of nobody changes nothing
    assert result["other"] is False
    assert result["size"] == 2
    assert result["got"] == "good"


async def test_token_helpers(web_node: WebNode, pages: Pages) -> None:
    page = await module_page(pages, web_node)
    result = await page.evaluate(
        """() => {
            const calls = [];
            const hist = {state: null, replaceState: (s, t, url) => calls.push(url)};
            const loc = (hash) => ({hash, pathname: "/room/or-1", search: "?x=1"});
            return {
                plain: P.tokenFromLocation(loc("#token=abc.def-_g"), hist),
                other: P.tokenFromLocation(loc("#view=grid&token=t1"), hist),
                none: P.tokenFromLocation(loc(""), hist),
                nokey: P.tokenFromLocation(loc("#view=grid"), hist),
                calls,
                link: P.tokenFromText("  http://h:1/room/or-1#token=abc.def  "),
                bare: P.tokenFromText(" abc.def "),
                empty: P.tokenFromText("   "),
            };
        }"""
    )
    assert result == {
        "plain": "abc.def-_g",
        "other": "t1",
        "none": None,
        "nokey": None,
        "calls": ["/room/or-1?x=1", "/room/or-1?x=1#view=grid"],
        "link": "abc.def",
        "bare": "abc.def",
        "empty": None,
    }


async def test_connect_request_and_errors(web_node: WebNode, pages: Pages) -> None:
    page = await module_page(pages, web_node)
    good = web_node.token("or-1", "expert", "Dr Wang", identity="dr-wang")
    expired = web_node.token("or-1", "expert", "Dr Wang", ttl_s=60, now=time.time() - 3600)
    result = await page.evaluate(
        """async ([good, expired]) => {
            const out = {};
            try { await P.connect(location.origin, {token: expired, room: "or-1"}); }
            catch (e) { out.expired = [e instanceof P.ProtocolError, e.code, e.message]; }
            try { await P.connect(location.origin, {token: good, room: "or-2"}); }
            catch (e) { out.wrongRoom = e.code; }
            try { await P.connect(location.origin, {token: "not-a-jwt"}); }
            catch (e) { out.invalid = e.code; }

            const conn = await P.connect(location.origin, {token: good, room: "or-1"});
            try { await conn.request("snapshot"); } catch (e) { out.beforeJoin = e.code; }
            const snap = await conn.join({quality: "good"});
            const size = conn.participants.size;
            out.snapshot = [snap.room, snap.self.identity, snap.self.quality, size];
            try { await conn.join(); } catch (e) { out.again = e.code; }
            try { await conn.request("remove_participant", {identity: "x"}); }
            catch (e) { out.forbidden = [e.code, e.message]; }
            try { await conn.request("update", {colour: "red"}); }
            catch (e) { out.invalid_payload = e.code; }
            const me = await conn.update({quality: "fair"});
            out.updated = me.quality;
            out.state = conn.state;
            await conn.leave();
            out.afterLeave = [conn.state, conn.participants.size, conn.snapshot];
            conn.close();
            try { await conn.request("snapshot"); } catch (e) { out.closed = e.code; }
            return out;
        }""",
        [good, expired],
    )
    assert result["expired"] == [True, "token_expired", "the token has expired; ask for a new one"]
    assert result["wrongRoom"] == "token_wrong_room"
    assert result["invalid"] == "token_invalid"
    assert result["beforeJoin"] == "not_joined"
    assert result["snapshot"] == ["or-1", "dr-wang", "good", 1]
    assert result["again"] == "already_joined"
    assert result["forbidden"][0] == "forbidden"
    assert "remove_participants" in result["forbidden"][1]
    assert result["invalid_payload"] == "invalid_payload"
    assert result["updated"] == "fair"
    assert result["state"] == "joined"
    assert result["afterLeave"] == ["connected", 0, None]
    assert result["closed"] == "not_connected"


async def test_a_console_refreshes_its_token_silently_and_reconnects_with_it(
    web_node: WebNode, pages: Pages
) -> None:
    """After joining, the connection holds a token of its own at once (a copy of the join
    link can no longer take its place), refreshes it before each expiry, and a reconnect
    after a dropped link uses the fresh one: a 12 s token still works at 20 s."""
    page = await module_page(pages, web_node)
    link = web_node.token("or-1", "surgeon", "Dr Ma", identity="dr-ma", ttl_s=12)
    result = await page.evaluate(
        """async (link) => {
            const conn = await P.connect(location.origin, {token: link, room: "or-1"});
            const seen = [];
            conn.onToken((t) => seen.push(t));
            await conn.join();
            const wait = (ms) => new Promise((r) => setTimeout(r, ms));
            for (let i = 0; i < 50 && seen.length === 0; i++) await wait(100);
            const first = conn.token;
            await wait(20000);  // the link alone would have expired (12 s + 5 s leeway)
            conn.socket.io.engine.close();  // the link drops; socket.io reconnects by itself
            for (let i = 0; i < 100 && conn.state !== "joined"; i++) await wait(100);
            await wait(300);
            const snap = await conn.request("snapshot");
            const out = {seen: seen.length, first: first !== link, changed: conn.token !== first,
                         state: conn.state, me: snap.self.identity};
            conn.close();
            return out;
        }""",
        link,
    )
    assert result["first"] and result["changed"]  # refreshed at once, then again
    assert result["seen"] >= 2
    assert result["state"] == "joined" and result["me"] == "dr-ma"
