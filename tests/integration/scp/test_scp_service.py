"""Service behaviour: index and event, duplicates, database outage, idle and slow peers,
allow-lists and TLS."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import EmbeddedPostgres
from cinebridge_common.messages import InstanceReceived
from cinebridge_testkit import require_tool, wait_for
from cinebridge_testkit.metrics import moved, scrape

ECHO = "1.2.840.10008.1.1"


async def test_index_and_event(scp: Any, dicom: Any, tmp_path: Path, nats_url: str) -> None:
    bus = await Bus.connect(nats_url, "scp-test-listener")
    seen: list[InstanceReceived] = []

    async def on_event(msg: Any) -> None:
        seen.append(InstanceReceived.from_bytes(msg.data))

    await bus.subscribe_events(InstanceReceived.subject, on_event)
    path = dicom.make_ct(tmp_path / "a.dcm", size=32, patient="Müller^Jörg", patient_id="P7")
    try:
        assert await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, [path]) == [0]
        await wait_for(lambda: _truthy(len(seen) == 1), 10, what="InstanceReceived event")
    finally:
        await bus.close()
    event = seen[0]
    row = await scp.pool.fetchrow(
        """SELECT s.patient_name, s.patient_id, s.patient_birth_date, s.patient_sex,
                  s.accession_number, s.study_date, s.study_description, se.modality,
                  i.sop_class_uid, i.transfer_syntax_uid, i.size, i.sha256, i.rel_path,
                  i.calling_ae, i.id::text AS id
           FROM received_instances i JOIN received_series se ON se.id = i.series_id
           JOIN received_studies s ON s.id = i.study_id"""
    )
    assert row["patient_name"] == "Müller^Jörg" and row["patient_id"] == "P7"
    assert (row["patient_birth_date"], row["patient_sex"]) == ("19700101", "F")
    assert (row["accession_number"], row["study_date"]) == ("ACC1", "20261129")
    assert (row["study_description"], row["modality"]) == ("Colonoscopy", "CT")
    assert row["calling_ae"] == "PYSCU" and event.calling_ae == "PYSCU"
    stored = scp.media_root / row["rel_path"]
    assert row["size"] == stored.stat().st_size == event.size
    assert event.instance_id == row["id"] and event.sha256 == row["sha256"]
    assert event.rel_path == row["rel_path"] and row["rel_path"].startswith("received/")
    patients = await scp.pool.fetch("SELECT * FROM received_patients")
    assert [p["patient_id"] for p in patients] == ["P7"]


async def _truthy(value: bool) -> bool:
    return value


async def test_an_association_logs_its_outcomes_once(
    scp: Any, dicom: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO an association's end carries its counts; a stored instance has no line of its
    own (it cost ~0.1 ms of CPU per instance), only at DEBUG."""
    caplog.set_level(logging.INFO, logger="cinebridge_scp")
    paths = [dicom.make_ct(tmp_path / f"{n}.dcm", size=32) for n in range(3)]
    assert await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, paths) == [0, 0, 0]

    def released() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "association released"]

    await wait_for(lambda: _truthy(bool(released())), 10, what="the association's end logged")
    (record,) = released()
    counts = record.__dict__["kv"]  # the `extra` of kv()
    assert (counts["stored"], counts["refused"]) == (3, 0)
    assert not [r for r in caplog.records if r.getMessage() == "stored"]


@pytest.mark.parametrize("mode", ["replace", "keep-first"])
async def test_second_copy_of_a_uid(
    scp_factory: Any, dicom: Any, tmp_path: Path, mode: str
) -> None:
    first = dicom.make_ct(tmp_path / "first.dcm", size=32)
    ds = pydicom.dcmread(first)
    ds.StudyDescription = "second copy"
    ds.PixelData = bytes(len(ds.PixelData))
    second = tmp_path / "second.dcm"
    ds.save_as(second, enforce_file_format=True)
    async with scp_factory(scp_duplicates=mode) as scp:
        statuses = await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, [first, second])
        assert statuses == [0, 0]
        rows = await scp.pool.fetch("SELECT rel_path, replacements FROM received_instances")
        assert len(rows) == 1
        files = scp.stored_files()
        assert len(files) == 1 and files[0] == scp.media_root / rows[0]["rel_path"]
        kept = pydicom.dcmread(files[0], stop_before_pixels=True).StudyDescription
        if mode == "replace":
            assert kept == "second copy" and rows[0]["replacements"] == 1
        else:
            assert kept == "Colonoscopy" and rows[0]["replacements"] == 0
        assert (await scp.rows())["events"] == (2 if mode == "replace" else 1)


async def test_postgres_stopped_answers_a700_and_keeps_acknowledged(
    nats_url: str, tmp_path: Path, dicom: Any, scp_factory: Any
) -> None:
    """A private PostgreSQL (the session one stays up for other tests) stopped mid-run."""
    pg = EmbeddedPostgres(tmp_path / "pg")
    await asyncio.to_thread(pg.start)
    try:
        runner = scp_factory(database_url=pg.dsn, scp_db_timeout_s=3.0)
        async with runner as scp:
            acked = dicom.make_ct(tmp_path / "acked.dcm", size=32)
            assert await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, [acked]) == [0]
            await asyncio.to_thread(pg.stop, "fast")
            during = dicom.make_ct(tmp_path / "during.dcm", size=32)
            statuses = await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, [during])
            assert statuses == [0xA700]
            assert len(scp.stored_files()) == 1  # only the acknowledged one
            assert await asyncio.to_thread(scp.echo) == 0
            await asyncio.to_thread(pg.start)
            retry = await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, [during])
            assert retry == [0]
            assert scp.app.ctx is not None
            uids = {
                r["sop_instance_uid"]
                for r in await scp.app.ctx.pool.fetch(
                    "SELECT sop_instance_uid FROM received_instances"
                )
            }
            for path in (acked, during):
                assert pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID in uids
            assert len(scp.stored_files()) == 2
    finally:
        await asyncio.to_thread(pg.stop, "immediate")


async def test_200_idle_connections_do_not_block_a_real_peer(
    scp: Any, dicom: Any, tmp_path: Path, raw: Any
) -> None:
    """100 bare TCP connections and 100 idle associations (each would poll every 1 ms in
    stock pynetdicom), then a real storescu must still store promptly."""
    idle = [socket.create_connection(("127.0.0.1", scp.port)) for _ in range(100)]
    associated = [raw.Peer(scp.port) for _ in range(100)]
    try:
        for peer in associated:
            reply = await asyncio.to_thread(peer.associate)
            assert reply is not None and reply[0] == 0x02
        await wait_for(lambda: _truthy(_pending(scp) >= 90), 10, what="idle connections")
        folder = tmp_path / "real"
        folder.mkdir()
        for n in range(20):
            dicom.make_ct(folder / f"{n}.dcm", size=64)
        started = time.monotonic()
        exe = require_tool("storescu")
        result = await asyncio.to_thread(
            subprocess.run,
            [exe, "-aec", scp.ae_title, "+sd", "127.0.0.1", str(scp.port), str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert (await scp.rows())["instances"] == 20
        assert took < 10, f"20 instances took {took:.1f} s next to 200 idle connections"
    finally:
        for sock in idle:
            sock.close()
        for peer in associated:
            peer.close()


def _pending(scp: Any) -> int:
    return sum(server.pending_connections for server in scp.app.listener.servers)


async def test_idle_and_slow_drip_peers_are_dropped(scp_factory: Any, raw: Any) -> None:
    async with scp_factory(
        scp_acse_timeout_s=1.0, scp_pdu_timeout_s=1.5, scp_network_timeout_s=1.0
    ) as scp:

        def idle_then_drip() -> tuple[bool, bool]:
            idle = raw.Peer(scp.port)
            started = time.monotonic()
            idle_dropped = idle.closed_by_peer(5) and time.monotonic() - started < 3
            drip = raw.Peer(scp.port)
            assert drip.associate() is not None
            rq = raw.echo_rq()
            dropped = False
            for byte in rq:
                try:
                    drip.send(bytes([byte]))
                except OSError:
                    dropped = True
                    break
                time.sleep(0.3)
            dropped = dropped or drip.closed_by_peer(3)
            idle.close()
            drip.close()
            return idle_dropped, dropped

        assert await asyncio.to_thread(idle_then_drip) == (True, True)
        assert await asyncio.to_thread(scp.echo) == 0


async def test_allow_lists(scp_factory: Any) -> None:
    from pynetdicom import AE

    def associate(port: int, calling: str) -> bool:
        ae = AE(ae_title=calling)
        ae.acse_timeout = 5
        ae.add_requested_context(ECHO)
        assoc = ae.associate("127.0.0.1", port, ae_title="CINEBRIDGE")
        ok = bool(assoc.is_established)
        if ok:
            assoc.release()
        return ok

    async with scp_factory(scp_allowed_calling_ae_titles=["MODALITY1"]) as scp:
        assert await asyncio.to_thread(associate, scp.port, "MODALITY1")
        assert not await asyncio.to_thread(associate, scp.port, "INTRUDER")
    async with scp_factory(scp_allowed_addresses=["10.0.0.0/8"]) as scp:
        assert not await asyncio.to_thread(associate, scp.port, "MODALITY1")
    async with scp_factory(scp_allowed_addresses=["127.0.0.0/8"]) as scp:
        assert await asyncio.to_thread(associate, scp.port, "MODALITY1")


async def test_tls_listener(scp_factory: Any, tmp_path: Path, dicom: Any) -> None:
    openssl = require_tool("openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    from cinebridge_common.embedded import free_port

    tls_port = free_port()
    async with scp_factory(scp_tls_cert=cert, scp_tls_key=key, scp_tls_port=tls_port) as scp:

        def store_over_tls() -> list[int]:
            ctx = ssl.create_default_context(cafile=str(cert))
            ctx.check_hostname = False
            return dicom.store(
                tls_port,
                scp.ae_title,  # type: ignore[no-any-return]
                [dicom.make_ct(tmp_path / "tls.dcm", size=32)],
                tls_args=(ctx, None),
            )

        assert await asyncio.to_thread(store_over_tls) == [0]
        assert (await scp.rows())["instances"] == 1


async def test_dcmtk_storescu_over_mutual_tls(scp_factory: Any, tmp_path: Path, dicom: Any) -> None:
    """PS3.15 B.9: DCMTK's storescu (+tls, its BCP 195 profile) stores over TLS with a client
    certificate of the configured CA; one with a certificate nobody issued is refused in the
    handshake and stores nothing."""
    from cinebridge_common.embedded import free_port
    from cinebridge_testkit.certs import make_pki

    storescu = require_tool("storescu")
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    path = dicom.make_ct(tmp_path / "mtls.dcm", size=32)
    async with scp_factory(
        scp_tls_cert=pki.server.certificate,
        scp_tls_key=pki.server.private_key,
        scp_tls_client_ca=pki.ca,
        scp_tls_port=tls_port,
    ) as scp:

        def storescu_with(pair: Any) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [storescu, "-aec", scp.ae_title, "+tls", str(pair.private_key),
                 str(pair.certificate), "+cf", str(pki.ca), "127.0.0.1", str(tls_port),
                 str(path)],
                capture_output=True, text=True, timeout=60, env={**os.environ, "TCP_NODELAY": "1"},
            )  # fmt: skip

        refused = await asyncio.to_thread(storescu_with, pki.stranger)
        assert refused.returncode != 0, refused.stdout + refused.stderr
        assert (await scp.rows())["instances"] == 0
        done = await asyncio.to_thread(storescu_with, pki.client)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (await scp.rows())["instances"] == 1


async def test_worker_processes_share_the_port(
    scp_factory: Any, dicom: Any, tmp_path: Path, nats_url: str
) -> None:
    """CB_SCP_WORKERS=2: a second process binds the same port; 4 concurrent senders all land."""
    from cinebridge_common.messages import ServiceHeartbeat

    bus = await Bus.connect(nats_url, "scp-test-heartbeats")
    up: set[str] = set()

    async def on_heartbeat(msg: Any) -> None:
        beat = ServiceHeartbeat.from_bytes(msg.data)
        if beat.service == "scp" and beat.state == "up":
            up.add(beat.instance)

    await bus.subscribe_events(ServiceHeartbeat.subject, on_heartbeat)
    folders = []
    for n in range(4):
        folder = tmp_path / f"sender{n}"
        folder.mkdir()
        for m in range(10):
            dicom.make_ct(folder / f"{m}.dcm", size=64)
        folders.append(folder)
    exe = require_tool("storescu")
    try:
        async with scp_factory(scp_workers=2) as scp:
            await wait_for(lambda: _truthy("scp-test-w1" in up), 30, what="worker heartbeat")
            assert scp.app.ctx is not None
            runs = [
                asyncio.to_thread(
                    subprocess.run,
                    [exe, "-aec", scp.ae_title, "+sd", "127.0.0.1", str(scp.port), str(folder)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    env={**os.environ, "TCP_NODELAY": "1"},
                )
                for folder in folders
            ]
            results = await asyncio.gather(*runs)
            assert [r.returncode for r in results] == [0, 0, 0, 0], results[0].stderr
            rows = await scp.rows()
            assert rows["instances"] == 40 and len(scp.stored_files()) == 40
            callers = await scp.pool.fetchval(
                "SELECT count(DISTINCT calling_ae) FROM received_instances"
            )
            assert callers == 1
            assert scp.app.workers is not None
            worker_pids = [p.pid for p in scp.app.workers.procs]
            assert len(worker_pids) == 1
        for pid in worker_pids:  # stopped with the service
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    finally:
        await bus.close()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_recovery_rebuilds_rows_from_received_files(
    scp_factory: Any, dicom: Any, tmp_path: Path
) -> None:
    """The fsync'd file is the record: rows lost (a commit PostgreSQL never flushed, a crash
    between rename and commit) are rebuilt at start; a bad file is quarantined, not indexed."""
    made = [dicom.make_ct(tmp_path / f"{n}.dcm", size=32) for n in range(3)]
    uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in made]
    async with scp_factory(scp_recover_interval_s=3600) as scp:
        assert await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, made) == [0, 0, 0]
        assert scp.app.recovery is not None and not scp.app.recovery.counters
        # Metrics are process-wide: counted from here, before the next start's sweep runs.
        assert scp.app.ctx is not None
        before = await scrape(scp.app.ctx.health.url)
        rows = {
            r["sop_instance_uid"]: r["rel_path"]
            for r in await scp.pool.fetch(
                "SELECT sop_instance_uid, rel_path FROM received_instances"
            )
        }
        # Lost commit: the first instance's row is gone, its file stayed.
        await scp.pool.execute(
            "DELETE FROM received_instances WHERE sop_instance_uid = $1", uids[0]
        )
        day = (scp.media_root / rows[uids[2]]).parent
        # A second copy of the third instance renamed in, its commit lost (replace policy).
        copy = day / "0123456789abcdef0123456789abcdef.dcm"
        copy.write_bytes((scp.media_root / rows[uids[2]]).read_bytes())
        # A file that is no instance at all.
        (day / "fedcba9876543210fedcba9876543210.dcm").write_bytes(b"\0" * 300)
    async with scp_factory() as scp:
        assert scp.app.ctx is not None

        async def rebuilt() -> bool:
            return (
                (await scp.rows())["instances"] == 3
                and scp.app.recovery is not None
                and (sum(scp.app.recovery.counters.values()) == 3)
            )

        await wait_for(rebuilt, 20, what="rows rebuilt from received files")
        assert scp.app.recovery is not None
        assert dict(scp.app.recovery.counters) == {"recovered": 2, "quarantined": 1}
        after = await scrape(scp.app.ctx.health.url)
        assert moved(before, after, "cinebridge_scp_quarantined_files_total") == 1
        assert (
            moved(before, after, "cinebridge_scp_recovered_files_total", outcome="recovered") == 2
        )
        after = {
            r["sop_instance_uid"]: r
            for r in await scp.pool.fetch(
                "SELECT sop_instance_uid, rel_path, calling_ae, sha256 FROM received_instances"
            )
        }
        assert set(after) == set(uids)
        assert after[uids[0]]["rel_path"] == rows[uids[0]]
        assert after[uids[0]]["calling_ae"] == "PYSCU"  # from (0002,0016), kept on receipt
        assert after[uids[2]]["rel_path"] == str(copy.relative_to(scp.media_root))
        files = scp.stored_files()
        assert len(files) == 3 and all(
            scp.media_root / r["rel_path"] in files for r in after.values()
        )
        assert len(list((scp.media_root / "quarantine").rglob("*.dcm"))) == 1
        events = await scp.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE subject = 'cb.evt.instance.received'"
        )
        assert events >= 5  # three on receipt, one per rebuilt row


async def test_association_limit_rejects_transiently(scp_factory: Any, raw: Any) -> None:
    """Past CB_SCP_MAX_ASSOCIATIONS: A-ASSOCIATE-RJ transient, service provider (presentation),
    local limit exceeded (PS3.8 Table 9-21: 2/3/2); a freed slot is usable again."""
    async with scp_factory(scp_max_associations=2) as scp:

        def over_the_limit() -> tuple[list[int], bytes, int]:
            peers = [raw.Peer(scp.port) for _ in range(3)]
            try:
                kinds = []
                for peer in peers[:2]:
                    reply = peer.associate()
                    kinds.append(-1 if reply is None else reply[0])
                third = peers[2].associate()
                assert third is not None
                peers[0].close()
                time.sleep(0.3)
                again = raw.Peer(scp.port)
                try:
                    reply = again.associate()
                    return kinds, third[1], -1 if reply is None else reply[0]
                finally:
                    again.close()
            finally:
                for peer in peers:
                    peer.close()

        kinds, rejection, after = await asyncio.to_thread(over_the_limit)
        assert kinds == [0x02, 0x02]
        assert rejection[1:4] == bytes([2, 3, 2])
        assert after == 0x02


async def test_role_selection_from_a_real_peer(scp: Any, dicom: Any, tmp_path: Path) -> None:
    """pynetdicom proposing SCP/SCU Role Selection (PS3.7 D.3.3.4): as SCU it may store; asking
    us to act as SCU (it would be the SCP) has that context refused."""
    from pynetdicom import AE, build_role

    def propose(scu: bool, scp_role: bool) -> tuple[int, int | None]:
        """(result of the CT context, C-STORE status if it was accepted)."""
        ae = AE(ae_title="ROLES")
        ae.add_requested_context(ECHO)  # keeps the association up if CT is refused
        ae.add_requested_context(dicom.CT, "1.2.840.10008.1.2.1")
        role = build_role(dicom.CT, scu_role=scu, scp_role=scp_role)
        assoc = ae.associate("127.0.0.1", scp.port, ae_title=scp.ae_title, ext_neg=[role])
        assert assoc.is_established
        try:
            refused = [cx for cx in assoc.rejected_contexts if cx.abstract_syntax == dicom.CT]
            if refused:
                return int(refused[0].result), None
            path = dicom.make_ct(tmp_path / f"role-{scu}-{scp_role}.dcm", size=16)
            status = assoc.send_c_store(path)
            return 0, int(status.Status) if status else None
        finally:
            assoc.release()

    assert await asyncio.to_thread(propose, True, False) == (0, 0)
    assert await asyncio.to_thread(propose, False, True) == (1, None)  # user rejection
