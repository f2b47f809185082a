"""The timeline page in headless Chromium (Debian's ``chromium``, driven by Playwright; no browser is
downloaded) against a real daemon: it loads, a search shows results with their fields, a trace shows its
timeline with the reporting handles, the chart counts events per type per day, report text stays text,
and nothing is fetched from anywhere but the daemon.

``MEMORY_PAGE_SCREENSHOT=docs/timeline-page.png python -m pytest tests/memory_agent/test_page.py``
refreshes the README's screenshot.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.async_api", reason="needs playwright: pip install -e '.[dev]'")
expect = playwright_api.expect
pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it"),
]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'
H = 3600.0


async def seed(mesh_agent: Any, now: float) -> None:
    reports = [
        ("monitor", {"event": "anomaly", "service": "api-gateway", "summary": "5xx rate jumped to 12%",
                     "trace_id": "t-81", "occurred_at": now - 50 * H}),
        ("deploy", {"event": "rollback", "service": "api-gateway", "from_version": "v2.4.1", "to_version": "v2.3.9",
                    "reason": "error rate spike after deploy", "trace_id": "t-81", "occurred_at": now - 49.9 * H}),
        ("triage", {"event": "root_cause", "service": "api-gateway", "trace_id": "t-81",
                    "cause": "connection pool lowered from 50 to 5", "occurred_at": now - 49.5 * H}),
        ("deploy", {"event": "rollback", "service": "billing", "reason": "failed schema migration",
                    "trace_id": "t-50", "occurred_at": now - 100 * H}),
        ("test-runner", {"event": "flaky_test", "test": "test_login_redirect", "reason": HOSTILE,
                         "trace_id": "ci-7", "occurred_at": now - 20 * H}),
        ("test-runner", {"event": "flaky_test", "test": "test_checkout", "trace_id": "ci-8",
                         "occurred_at": now - 2 * H}),
    ]
    agents = {h: await mesh_agent(h) for h in {h for h, _ in reports}}
    for handle, payload in reports:
        reply = await agents[handle].request("memory", json.dumps(payload), content_type="application/json", timeout=30)
        assert json.loads(reply.payload)["status"] == "stored"


async def test_the_page_searches_and_draws_a_trace_timeline(nats_url, make_daemon, mesh_agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    now = time.time()
    daemon = await make_daemon(nats_url, clock=time.time)
    await seed(mesh_agent, now)
    base = daemon.http_url
    async with aiohttp.ClientSession() as session, session.get(f"{base}/") as response:
        assert response.status == 200 and "default-src 'none'" in response.headers["Content-Security-Policy"]

    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 860})
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(base + "/")
            # Loaded: the newest events of the last 7 days, the status badge, the chart.
            await page.wait_for_selector("#results tr.result")
            assert await page.locator("#results tr.result").count() == 6
            await page.wait_for_selector("#status.ready")
            assert "6 events" in await page.text_content("#status")
            bars = page.locator("#chart rect")
            counts = {}
            for i in range(await bars.count()):
                bar = bars.nth(i)
                key = await bar.get_attribute("data-type")
                counts[key] = counts.get(key, 0) + int(await bar.get_attribute("data-count") or 0)
            assert counts == {"anomaly": 1, "rollback": 2, "root_cause": 1, "flaky_test": 2}

            # A question: the answer text and the rows it rests on, with their fields.
            await page.fill("#q", "What rollbacks happened in the last 7 days?")
            await page.click("#search button[type=submit]")
            await expect(page.locator("#results-title")).to_have_text("Results (list): 2 of 2")
            rows = page.locator("#results tr.result")
            assert await rows.count() == 2
            assert "2 events of type rollback" in await page.text_content("#answer")
            first = await rows.nth(0).inner_text()
            assert "@deploy" in first and "rollback" in first and "billing" in first and "failed schema migration" in first

            # Narrower: the 24-hour window and a filter.
            await page.fill("#q", "")
            await page.select_option("#window", "86400")
            await page.click("#filters summary")
            await page.fill("#f-event", "flaky_test")
            await page.click("#search button[type=submit]")
            await expect(page.locator("#results-title")).to_have_text("Newest events: 2 of 2")
            text = await page.inner_text("#results")
            assert "test_checkout" in text and HOSTILE in text  # the report's markup is shown as text
            assert await page.locator("#results img").count() == 0 and await page.title() == "@memory"

            # A trace's timeline: vertical, in time order, with the reporting handles.
            await page.fill("#f-event", "")
            await page.select_option("#window", "604800")
            await page.fill("#q", "connection pool")
            await page.click("#search button[type=submit]")
            await page.wait_for_selector("#results button.trace-link:text-is('t-81')")
            await page.locator("#results button.trace-link:text-is('t-81')").first.click()
            await page.wait_for_selector("#timeline li.tl-item")
            items = page.locator("#timeline li.tl-item")
            assert await items.count() == 3
            heads = [await items.nth(i).locator(".tl-head").inner_text() for i in range(3)]
            assert heads == ["@monitor reported anomaly", "@deploy reported rollback", "@triage reported root_cause"]
            assert "Trace t-81: 3 events" in await page.text_content("#timeline-title")
            boxes = [await items.nth(i).bounding_box() for i in range(3)]
            assert all(a is not None and b is not None and a["y"] < b["y"] for a, b in itertools.pairwise(boxes))

            shot = os.environ.get("MEMORY_PAGE_SCREENSHOT")
            target = Path(shot) if shot else tmp_path / "timeline-page.png"
            await page.screenshot(path=str(target), full_page=True)
            assert target.stat().st_size > 10_000
            assert not errors, errors
            assert requested and all(url.startswith(base + "/") for url in requested), requested
        finally:
            await browser.close()


async def test_the_api_explains_bad_parameters(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = await start_daemon()
    async with aiohttp.ClientSession() as session:
        for query, says in (("since=yesterday", '"since"'), ("limit=0", '"limit"'), ("q=x&limit=abc", '"limit"')):
            async with session.get(f"{daemon.http_url}/api/search?{query}") as response:
                assert response.status == 400 and says in (await response.json())["error"], query
        async with session.get(f"{daemon.http_url}/api/timeline") as response:
            assert response.status == 400 and "trace_id" in (await response.json())["error"]
        async with session.get(f"{daemon.http_url}/static/../../errors.py") as response:  # a file that exists
            assert response.status == 404
