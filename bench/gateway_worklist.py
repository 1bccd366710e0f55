"""Worklist part of `bench/gateway.py`: N realistic entries from DCMTK wlmscpfs to the gateway
API answer and to a rendered table in headless Chromium.

The entries are the demo worklist's (~4 KB each, every Table 18 attribute); no Modality C key,
so all N match. The worklist service runs as its own process, the answer crosses the bus in
chunks when it is over one NATS message, the gateway keeps it and answers the first page.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cinebridge_testkit.demo_worklist import DEMO_AE, write_worklist
from cinebridge_testkit.worklist_peers import Wlmscpfs
from report import Figures

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


async def session(base: str, password: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, timeout=120)
    me = await client.post("/api/v1/auth/login", json={"username": "admin", "password": password})
    me.raise_for_status()
    client.headers["X-CSRF-Token"] = me.json()["csrf_token"]
    return client


async def wait_answering(client: httpx.AsyncClient, entries: int) -> None:
    """The worklist service is up and its server answers with every entry."""
    deadline = time.monotonic() + 120
    while True:
        reply = await client.post("/api/v1/worklist/query", json={"limit": 1})
        if reply.status_code == 200 and reply.json()["total"] == entries:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"worklist not answering: {reply.status_code} {reply.text[:300]}")
        await asyncio.sleep(1.0)


async def api_rounds(client: httpx.AsyncClient, entries: int, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        reply = await client.post("/api/v1/worklist/query", json={"limit": 100})
        times.append(time.perf_counter() - t0)
        body = reply.json()
        assert reply.status_code == 200 and body["total"] == entries, reply.text[:300]
        assert len(body["items"]) == min(100, entries)
    return times


#: Set on the search button's click (capture phase, before the app's handler) by the probe.
CLICK_PROBE = """
document.addEventListener("click", (e) => {
  if (e.target.closest?.("#worklist-search")) window.__cbClick = performance.now();
}, true);
"""
#: Where the time of one search went, read in the page once the last row is in the DOM:
#: before the request left, the request (server + transfer), and JSON parsing + DOM building.
PROFILE = """(rendered) => {
  const req = performance.getEntriesByType("resource")
    .filter((e) => e.name.includes("/api/v1/worklist/query")).pop();
  performance.clearResourceTimings();
  const clicked = window.__cbClick;
  return { total_ms: rendered - clicked, before_request_ms: req.startTime - clicked,
           request_ms: req.responseEnd - req.startTime,
           server_ms: req.responseStart - req.startTime,
           render_ms: rendered - req.responseEnd, json_bytes: req.encodedBodySize };
}"""


async def browser_rounds(
    base: str, password: str, entries: int, rounds: int
) -> tuple[list[float], list[dict[str, float]]]:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("chromium is not installed")
    rows = min(100, entries) + 1  # the header row
    times = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            # The page's CSP forbids string evaluation; the bench's probes need it.
            page = await browser.new_page(bypass_csp=True)
            await page.goto(base)
            await page.fill("input[name=username]", "admin")
            await page.fill("input[name=password]", password)
            await page.click("#login-button")
            await page.wait_for_function(
                "(document.querySelector('#whoami')?.textContent || '').includes('admin')",
                timeout=60_000,
            )
            await page.add_init_script(CLICK_PROBE)
            profiles = []
            for _ in range(rounds):
                await page.goto(f"{base}/#/worklist")
                await page.reload()
                await page.wait_for_selector("#worklist-search", timeout=60_000)
                t0 = time.perf_counter()
                await page.click("#worklist-search")
                rendered = await page.wait_for_function(
                    f"document.querySelectorAll('#worklist-table tr').length === {rows}"
                    " && performance.now()",
                    polling="raf",
                    timeout=120_000,
                )
                times.append(time.perf_counter() - t0)
                profiles.append(await page.evaluate(PROFILE, await rendered.json_value()))
        finally:
            await browser.close()
    return times, profiles


def show_profile(profiles: list[dict[str, float]]) -> dict[str, float]:
    """Medians of the in-page breakdown (the page's own clock, no automation overhead)."""
    keys = ("total_ms", "before_request_ms", "server_ms", "request_ms", "render_ms", "json_bytes")
    median = {k: statistics.median(p[k] for p in profiles) for k in keys}
    print(
        f"    in the page: click → last row {median['total_ms']:.0f} ms = before the request "
        f"{median['before_request_ms']:.0f} + request {median['request_ms']:.0f} (first byte "
        f"{median['server_ms']:.0f}) + JSON and DOM {median['render_ms']:.0f}; "
        f"answer {median['json_bytes'] / 1024:.0f} KB"
    )
    return median


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its reaped children) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def show(name: str, times: list[float]) -> float:
    ms = [t * 1000 for t in times]
    median = statistics.median(ms)
    print(f"  {name:<34} median {median:7.1f} ms  (runs: {', '.join(f'{x:.0f}' for x in ms)})")
    return median


async def bench_worklist(
    root: Path,
    env: dict[str, str],
    base: str,
    password: str,
    entries: int,
    rounds: int,
    gateway_pid: int,
    figures: Figures,
) -> bool:
    """Returns whether the rendered table took under 1 s (median)."""
    folder = root / "worklist" / DEMO_AE
    t0 = time.perf_counter()
    write_worklist(folder, entries, dt.date.today())
    print(f"wrote {entries} worklist files in {time.perf_counter() - t0:.1f} s")
    size = sum(p.stat().st_size for p in folder.glob("*.wl")) / entries
    with Wlmscpfs(root / "worklist", root / "wlmscpfs.log") as ris:
        seed = [{"id": "ris", "host": "127.0.0.1", "port": ris.port, "called_ae": DEMO_AE}]
        service_env = {
            **env,
            "CB_WORKLIST_SEED_SERVERS": json.dumps(seed),
            "CB_WORKLIST_MAX_ENTRIES": str(max(1000, entries)),
            "CB_INSTANCE_ID": "bench-worklist",
            "CB_HEALTH_PORT": "0",
        }
        service = subprocess.Popen([sys.executable, "-m", "cinebridge_worklist"], env=service_env)
        try:
            client = await session(base, password)
            try:
                await wait_answering(client, entries)
                print(
                    f"{entries} entries from wlmscpfs (~{size / 1024:.1f} KB each on disk), "
                    f"load average {load_average()}:"
                )
                assert ris.proc is not None
                pids = {"wlmscpfs": ris.proc.pid, "worklist": service.pid, "gateway": gateway_pid}
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                times = await api_rounds(client, entries, rounds)
                api = show("search → API answer (first page)", times)
                figures.put("worklist", "api_ms", api)
                for name, t0 in before.items():
                    cpu_ms = (cpu_seconds(pids[name]) - t0) * 1000 / rounds
                    figures.put("worklist", "cpu_ms_per_search", name, cpu_ms)
                cpu = ", ".join(
                    f"{name} {(cpu_seconds(pids[name]) - t0) * 1000 / rounds:.0f} ms"
                    for name, t0 in before.items()
                )
                print(f"  CPU per search (load-independent): {cpu}")
            finally:
                await client.aclose()
            browser_times, profiles = await browser_rounds(base, password, entries, rounds)
            rendered = show("search → rendered table (Chromium)", browser_times)
            figures.put("worklist", "rendered_ms", rendered)
            figures.put("worklist", "in_page", show_profile(profiles))
        finally:
            service.terminate()
            service.wait(15)
    print(f"  load average after: {load_average()}")
    figures.put("worklist", "entries", entries)
    figures.put("worklist", "entry_kb_on_disk", size / 1024)
    verdict = "PASS" if rendered < 1000 else "FAIL"
    print(
        f"target {entries} entries to a rendered table < 1 s: {verdict} "
        f"({rendered:.0f} ms; API {api:.0f} ms)"
    )
    return rendered < 1000
