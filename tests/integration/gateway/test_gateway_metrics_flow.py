"""Every service's /metrics after a scripted flow through the API with every real service: a
worklist query (DCMTK `wlmscpfs`), a study from its entry, a snapshot, Save, delivery to a PACS
(DCMTK `storescp`), to CineBridge's own SCP (an instance received) and to a destination that
is down (a failed delivery). The counters of each step must have moved (docs/metrics.md), and
the SCP, run with CB_LOG_FORMAT=json, wrote JSON lines whose association end counts the stored
instance and carries the id of the association's accept line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.embedded import EmbeddedNats, free_port, wait_port
from cinebridge_testkit import require_tool
from cinebridge_testkit.metrics import Samples, scrape, value

from .conftest import gateway_settings, start_gateway
from .test_gateway_e2e import _logs, processes, service_env, spawn

pytestmark = pytest.mark.integration
SERVICES = ("worklist", "capture", "converter", "sender", "scp")

#: (service, metric, labels, least value) the flow must reach. Fresh processes start at 0.
EXPECTED: list[tuple[str, str, dict[str, str], float]] = [
    ("worklist", "cinebridge_worklist_queries_total", {"outcome": "complete"}, 1),
    ("worklist", "cinebridge_worklist_query_duration_seconds_count", {}, 1),
    ("worklist", "cinebridge_worklist_query_entries_sum", {}, 1),
    ("capture", "cinebridge_capture_snapshot_duration_seconds_count", {"room": "or1"}, 1),
    ("capture", "cinebridge_capture_input_frames_per_second", {"source": "endo"}, 1),
    ("converter", "cinebridge_converter_conversions_total", {"outcome": "converted"}, 1),
    ("converter", "cinebridge_converter_instances_written_total", {}, 1),
    ("converter", "cinebridge_converter_conversion_paths_total", {}, 1),
    ("converter", "cinebridge_bus_messages_handled_total", {"outcome": "ack"}, 1),
    ("sender", "cinebridge_sender_delivery_attempts_total", {"destination": "PACS"}, 1),
    ("sender", "cinebridge_sender_delivery_attempts_total", {"destination": "LOCAL"}, 1),
    ("sender", "cinebridge_sender_cstore_responses_total", {"status": "0000"}, 2),
    ("sender", "cinebridge_sender_instance_send_duration_seconds_count", {}, 2),
    ("sender", "cinebridge_sender_association_failures_total", {"destination": "DOWN"}, 1),
    (
        "sender",
        "cinebridge_sender_delivery_attempts_total",
        {"destination": "DOWN", "state": "failed-retrying"},
        1,
    ),
    ("sender", "cinebridge_sender_queue_deliveries", {"destination": "DOWN"}, 1),
    ("scp", "cinebridge_scp_instances_received_total", {}, 1),
    ("scp", "cinebridge_scp_received_bytes_total", {}, 1000),
    ("scp", "cinebridge_scp_associations_accepted_total", {}, 1),
    ("scp", "cinebridge_scp_store_duration_seconds_count", {}, 1),
]

#: Station-wide gauges every service exports, refreshed every 10 s (they may be 0).
PRESENT: list[tuple[str, str, dict[str, str]]] = [
    (service, name, {})
    for service in SERVICES
    for name in ("cinebridge_outbox_pending_messages", "cinebridge_dead_letters")
] + [
    ("sender", "cinebridge_bus_consumer_pending_messages", {"consumer": "sender-forward"}),
    ("converter", "cinebridge_bus_consumer_ack_pending_messages", {"stream": "CB_JOBS"}),
]


def present(samples: Samples, name: str, labels: dict[str, str]) -> bool:
    return any(n == name and set(labels.items()) <= ls for n, ls in samples)


async def test_flow_moves_every_services_counters(database_url: str, tmp_path: Path) -> None:
    storescp, wlmscpfs = require_tool("storescp"), require_tool("wlmscpfs")
    require_tool("dump2dcm")
    nats = EmbeddedNats(tmp_path / "nats")  # no other test's durable consumers
    nats.start()
    try:
        await flow(storescp, wlmscpfs, nats.url, database_url, tmp_path)
    finally:
        nats.stop()


async def flow(storescp: str, wlmscpfs: str, nats_url: str, database_url: str, tmp: Path) -> None:
    media, pacs_dir, wl_dir = tmp / "media", tmp / "pacs", tmp / "worklist"
    pacs_dir.mkdir()
    pacs_port, wl_port, preview_port, scp_port = free_port(), free_port(), free_port(), free_port()
    env = service_env(nats_url, database_url, media, pacs_port, wl_port, preview_port)
    destinations = [
        {"name": "PACS", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port},
        {"name": "LOCAL", "ae_title": "CBSCP", "host": "127.0.0.1", "port": scp_port},
        {"name": "DOWN", "ae_title": "DOWN", "host": "127.0.0.1", "port": free_port()},
    ]
    env |= {
        "CB_SENDER_SEED_DESTINATIONS": json.dumps(destinations),
        "CB_SENDER_SWEEP_INTERVAL_S": "1",
        "CB_SCP_PORT": str(scp_port),
        "CB_SCP_AE_TITLE": "CBSCP",
    }
    subprocess.run(
        [sys.executable, "-m", "cinebridge_testkit.demo_worklist", str(wl_dir), "6"],
        check=True,
        env=env,
        capture_output=True,
        timeout=60,
    )
    dcmtk_env = {**env, "TCP_NODELAY": "1"}
    metrics_urls = {service: f"http://127.0.0.1:{free_port()}" for service in SERVICES}
    with processes(tmp) as procs:
        spawn(
            procs,
            [storescp, "-od", str(pacs_dir), "-aet", "PACS", "+xa", str(pacs_port)],
            tmp / "storescp.log",
            dcmtk_env,
        )
        spawn(
            procs,
            [wlmscpfs, "--data-files-path", str(wl_dir), "--keep-char-set", str(wl_port)],
            tmp / "wlmscpfs.log",
            dcmtk_env,
        )
        wait_port(pacs_port, 10)
        wait_port(wl_port, 10)
        gw, task = await start_gateway(
            gateway_settings(
                nats_url,
                database_url,
                media,
                gateway_preview_upstreams={"or1": f"http://127.0.0.1:{preview_port}"},
            )
        )
        try:
            for service in SERVICES:
                port = metrics_urls[service].rsplit(":", 1)[1]
                spawn(
                    procs,
                    [sys.executable, "-m", f"cinebridge_{service}"],
                    tmp / f"{service}.log",
                    {
                        **env,
                        "CB_INSTANCE_ID": f"flow-{service}",
                        "CB_HEALTH_PORT": port,
                        # The SCP logs JSON lines (CB_LOG_FORMAT=json), checked below.
                        "CB_LOG_FORMAT": "json" if service == "scp" else "text",
                    },
                )
            try:
                await drive(gw, procs, metrics_urls)
            except BaseException:
                print(_logs(tmp))
                raise
        finally:
            gw.ctx.stop.set()
            await asyncio.wait_for(task, 15)
    check_json_log(tmp / "scp.log")


def check_json_log(path: Path) -> None:
    """Every line of the SCP's log is a JSON object with its identity; at the default level an
    instance has no line of its own, and the end of the association that stored it (released by
    the sender) counts it under the id that the association's accept line carries."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert lines and all(r["service"] == "scp" and r["instance"] == "flow-scp" for r in lines)
    ended = [r for r in lines if r["event"] == "association released" and r["stored"] >= 1]
    assert ended and ended[0]["association"], lines
    accepted = [r for r in lines if r["event"] == "association accepted"]
    assert ended[0]["association"] in {r["association"] for r in accepted}
    assert all(r["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") for r in lines)


async def drive(gw: Any, procs: list[Any], metrics_urls: dict[str, str]) -> None:
    api = await gw.login()
    gateway_url = gw.ctx.health.url
    try:
        before = await scrape(gateway_url)
        await until_all_up(api, procs)
        found = await api.post("/api/v1/worklist/query", json={"patient_name": "TAYLOR"})
        assert found.status_code == 200, found.text
        item = found.json()["items"][0]
        created = await api.post(
            "/api/v1/studies", json={"origin": "worklist", "room": "or1", "worklist_item": item}
        )
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        assert (
            await api.put("/api/v1/rooms/or1/study", json={"study_id": study_id})
        ).status_code == 200
        await snapshot(api)
        saved = await api.post(f"/api/v1/studies/{study_id}/save", json={})
        assert saved.status_code == 202, saved.text
        samples = await until_expected(metrics_urls)
        after = await scrape(gateway_url)
    finally:
        await api.aclose()

    for service, got in samples.items():
        assert value(got, "cinebridge_service_info", {"service": service}) == 1, service
    save_route = {"route": "/api/v1/studies/{study_id}/save", "status": "202"}
    requests = "cinebridge_gateway_http_request_duration_seconds_count"
    assert value(after, requests, save_route) - value(before, requests, save_route) == 1


async def until_all_up(api: Any, procs: list[Any]) -> None:
    async with asyncio.timeout(90):
        while True:
            for proc in procs:
                assert proc.poll() is None, "a service exited"
            health = (await api.get("/api/health")).json()
            up = {i["service"] for i in health["instances"] if i["state"] == "up"}
            if set(SERVICES) <= up:
                return
            await asyncio.sleep(0.5)


async def snapshot(api: Any) -> None:
    """The first snapshot once the source delivers frames (the capture service refuses before)."""
    async with asyncio.timeout(60):
        while True:
            reply = await api.post("/api/v1/rooms/or1/sources/endo/snapshot")
            if reply.status_code == 200 and reply.json().get("ok", True):
                return
            await asyncio.sleep(1)


async def until_expected(metrics_urls: dict[str, str]) -> dict[str, Samples]:
    """Scrape every service until each expected figure is reached (bounded); the scrapes."""
    missing: list[str] = []
    samples: dict[str, Samples] = {}
    try:
        async with asyncio.timeout(150):
            while True:
                samples = {s: await scrape(url) for s, url in metrics_urls.items()}
                missing = [
                    f"{svc} {name}{labels} = {value(samples[svc], name, labels)} < {least}"
                    for svc, name, labels, least in EXPECTED
                    if value(samples[svc], name, labels) < least
                ] + [
                    f"{svc} {name}{labels} absent"
                    for svc, name, labels in PRESENT
                    if not present(samples[svc], name, labels)
                ]
                if not missing:
                    return samples
                await asyncio.sleep(1)
    except TimeoutError:
        pytest.fail("counters that did not move:\n" + "\n".join(missing))
