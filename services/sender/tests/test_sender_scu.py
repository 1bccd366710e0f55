"""C-STORE/C-ECHO SCU against an in-process scripted SCP: Table 11, contexts, failures."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cinebridge_common.embedded import free_port
from cinebridge_sender import scu
from cinebridge_sender.policy import Backoff, classify_status
from cinebridge_testkit.instances import dataset_bytes, make_instance
from cinebridge_testkit.storage_peers import ScriptedScp
from pydicom.uid import MPEG4HP41, ExplicitVRLittleEndian, ImplicitVRLittleEndian

FAST = scu.Timeouts(connect_s=2, acse_s=2, dimse_s=2, network_s=2)


def item_for(path: Path) -> scu.Item:
    from pynetdicom.dsutils import split_dataset

    meta, _ = split_dataset(path)
    return scu.Item(
        key=path.stem,
        path=path,
        sop_class_uid=str(meta.MediaStorageSOPClassUID),
        sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
    )


def peer(scp: ScriptedScp) -> scu.Peer:
    return scu.Peer(ae_title=scp.ae_title, host="127.0.0.1", port=scp.port)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, "sent"),
        (0xB000, "warning"),
        (0xB006, "warning"),
        (0xB007, "warning"),
        (0xA700, "failed-retrying"),
        (0xA7FF, "failed-retrying"),
        (0xC000, "failed-retrying"),
        (0x0110, "failed-retrying"),
        (0x0122, "failed-permanent"),
        (0x0124, "failed-permanent"),
        (0xA900, "failed-permanent"),
        (0xB001, "failed-permanent"),  # a warning Table 11 does not list is a failure
        (0xFEED, "failed-permanent"),
    ],
)
def test_table_11_classification(status: int, outcome: str) -> None:
    assert classify_status(status).outcome == outcome


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    b = Backoff(base_s=30, factor=2, cap_s=600, jitter=0.2)
    assert 24 <= b.delay_s(1) <= 36
    assert 48 <= b.delay_s(2) <= 72
    assert 480 <= b.delay_s(10) <= 720
    assert len({round(b.delay_s(3), 6) for _ in range(20)}) > 1


def test_batch_is_byte_identical_over_one_association(tmp_path: Path) -> None:
    paths = [tmp_path / f"{n}.dcm" for n in range(4)]
    for n, path in enumerate(paths):
        make_instance(path, kind=("jpeg", "raw", "video", "jpeg")[n], payload_bytes=70_000, seed=n)
    with ScriptedScp() as scp:
        results = scu.send_batch(peer(scp), [item_for(p) for p in paths], FAST)
    assert [r.outcome for r in results] == ["sent"] * 4
    assert scp.associations == 1
    for path in paths:
        uid = item_for(path).sop_instance_uid
        assert scp.received[uid] == dataset_bytes(path)
        assert scp.received_ts[uid] == item_for(path).transfer_syntax_uid


def test_every_table_11_status_and_the_rest_of_the_batch_still_sent(tmp_path: Path) -> None:
    codes = [0x0000, 0xB000, 0xB006, 0xB007, 0xA700, 0x0122, 0xC000, 0x0000]
    paths = [tmp_path / f"{n}.dcm" for n in range(len(codes))]
    by_uid = {}
    for n, path in enumerate(paths):
        by_uid[str(make_instance(path, seed=n).SOPInstanceUID)] = codes[n]
    seen: list[str] = []
    with ScriptedScp(script=lambda uid, _n: by_uid[uid]) as scp:
        results = scu.send_batch(
            peer(scp), [item_for(p) for p in paths], FAST, on_result=lambda r: seen.append(r.key)
        )
    assert [r.status for r in results] == codes
    assert [r.outcome for r in results] == [
        "sent",
        "warning",
        "warning",
        "warning",
        "failed-retrying",
        "failed-permanent",
        "failed-retrying",
        "sent",
    ]
    assert seen == [p.stem for p in paths]


def test_refused_compressed_context_is_a_clear_permanent_failure(tmp_path: Path) -> None:
    video, raw = tmp_path / "v.dcm", tmp_path / "r.dcm"
    make_instance(video, kind="video")
    make_instance(raw, kind="raw")
    with ScriptedScp(transfer_syntaxes=[ImplicitVRLittleEndian, ExplicitVRLittleEndian]) as scp:
        results = scu.send_batch(peer(scp), [item_for(video), item_for(raw)], FAST)
        scp.wait_ended(1)
    assert results[0].outcome == "failed-permanent"
    assert results[0].error is not None and MPEG4HP41 in results[0].error
    assert results[1].outcome == "sent"
    # Statement §4.2.2.3.1.3: the client aborts an association whose compressed context the SCP
    # marked unsupported, after sending what it could.
    assert (scp.aborted, scp.released) == (1, 0)


def test_a_batch_whose_contexts_are_all_accepted_is_released(tmp_path: Path) -> None:
    still = tmp_path / "s.dcm"
    make_instance(still, kind="jpeg")
    with ScriptedScp() as scp:
        results = scu.send_batch(peer(scp), [item_for(still)], FAST)
        scp.wait_ended(1)
    assert results[0].outcome == "sent"
    assert (scp.aborted, scp.released) == (0, 1)


def test_decompress_option_sends_jpeg_stills_as_explicit_le(tmp_path: Path) -> None:
    still = tmp_path / "s.dcm"
    uid = str(make_instance(still, kind="jpeg").SOPInstanceUID)
    with ScriptedScp(transfer_syntaxes=[ImplicitVRLittleEndian, ExplicitVRLittleEndian]) as scp:
        results = scu.send_batch(peer(scp), [item_for(still)], FAST, decompress_stills=True)
    assert results[0].outcome == "sent"
    assert scp.received_ts[uid] in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@pytest.mark.parametrize(("reject", "transient"), [("permanent", False), ("transient", True)])
def test_rejected_association(tmp_path: Path, reject: str, transient: bool) -> None:
    path = tmp_path / "a.dcm"
    make_instance(path)
    with ScriptedScp(reject=reject) as scp, pytest.raises(scu.AssociationFailed) as info:
        scu.send_batch(peer(scp), [item_for(path)], FAST)
    assert info.value.transient is transient
    assert reject in info.value.reason


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "a.dcm"
    make_instance(path)
    dead = scu.Peer(ae_title="NOBODY", host="127.0.0.1", port=free_port())
    with pytest.raises(scu.AssociationFailed) as info:
        scu.send_batch(dead, [item_for(path)], FAST)
    assert info.value.transient
    assert "cannot connect" in info.value.reason


def test_hanging_scp_times_out_and_the_rest_fail_transiently(tmp_path: Path) -> None:
    paths = [tmp_path / f"{n}.dcm" for n in range(3)]
    for n, path in enumerate(paths):
        make_instance(path, seed=n)
    with ScriptedScp(script=lambda _uid, _n: 5.0) as scp:
        fast = scu.Timeouts(connect_s=2, acse_s=2, dimse_s=1, network_s=2)
        results = scu.send_batch(peer(scp), [item_for(p) for p in paths], fast)
    assert [r.outcome for r in results] == ["failed-retrying"] * 3
    assert results[0].error is not None and "no C-STORE response" in results[0].error


def test_parallel_associations_share_the_items(tmp_path: Path) -> None:
    paths = [tmp_path / f"{n}.dcm" for n in range(6)]
    for n, path in enumerate(paths):
        make_instance(path, seed=n)
    with ScriptedScp() as scp:
        results = scu.send_parallel(peer(scp), [item_for(p) for p in paths], FAST, associations=3)
    assert sorted(r.key for r in results) == sorted(p.stem for p in paths)
    assert {r.outcome for r in results} == {"sent"}
    assert scp.associations == 3


def test_echo_reachable_and_not(tmp_path: Path) -> None:
    with ScriptedScp() as scp:
        ok = scu.echo(peer(scp))
    assert ok.reachable and ok.rtt_ms is not None
    down = scu.echo(scu.Peer(ae_title="X", host="127.0.0.1", port=free_port()), timeout_s=2)
    assert not down.reachable and down.reason and "cannot connect" in down.reason


def test_echo_to_an_unknown_host_gives_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result = scu.echo(scu.Peer(ae_title="X", host="no-such-host.invalid", port=104), timeout_s=2)
    assert not result.reachable
    assert result.reason and result.reason.startswith("cannot reach X@no-such-host.invalid:104: ")
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"


def test_tls_destination_verified_against_the_configured_ca(tmp_path: Path) -> None:
    import ssl
    import subprocess

    from cinebridge_sender.batches import tls_context
    from cinebridge_sender.settings import SenderSettings
    from cinebridge_testkit import require_tool

    openssl = require_tool("openssl")
    cert, key = tmp_path / "pacs.pem", tmp_path / "pacs.key"
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
            "/CN=pacs",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    path = tmp_path / "a.dcm"
    uid = str(make_instance(path).SOPInstanceUID)
    with ScriptedScp(tls=server) as scp:
        trusted = tls_context(SenderSettings(sender_tls_ca_file=cert))
        secure = scu.Peer(scp.ae_title, "127.0.0.1", scp.port, tls=trusted)
        assert [r.outcome for r in scu.send_batch(secure, [item_for(path)], FAST)] == ["sent"]
        assert uid in scp.received
        # A PACS whose certificate we cannot verify gets nothing.
        untrusted = scu.Peer(scp.ae_title, "127.0.0.1", scp.port, tls=tls_context(SenderSettings()))
        with pytest.raises(scu.AssociationFailed, match="CERTIFICATE_VERIFY_FAILED"):
            scu.send_batch(untrusted, [item_for(path)], FAST)
