"""Bad input over a raw socket: each case is followed by a C-ECHO that must succeed within 1 s,
and nothing may be stored (no file, no row, no temp file)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

ECHO = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _corpus(raw: Any) -> list[tuple[str, bool, list[bytes]]]:
    """(name, associate first?, byte strings to send)."""
    rq = raw.associate_rq()
    body = rq[6:]
    rng = random.Random(20261129)
    pdu = raw.pdu
    cases: list[tuple[str, bool, list[bytes]]] = [
        ("http request", False, [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]),
        ("tls client hello", False, [bytes.fromhex("160301002a0100002603") + bytes(38)]),
        ("connect and close", False, []),
        ("three header bytes", False, [b"\x01\x00\x00"]),
        ("associate length 4 GiB", False, [struct.pack(">BBL", 1, 0, 0xFFFFFFFF) + body[:64]]),
        ("associate length 2 MiB", False, [struct.pack(">BBL", 1, 0, 2 << 20) + body]),
        ("associate length lies long", False, [pdu(1, body, len(body) + 1000)]),
        ("associate length lies short", False, [pdu(1, body, len(body) - 20) + body[-20:]]),
        ("associate tiny", False, [pdu(1, b"\x00\x01")]),
        ("associate protocol version 2", False, [pdu(1, b"\x00\x02" + body[2:])]),
        ("associate garbage body", False, [pdu(1, rng.randbytes(len(body)))]),
        (
            "associate item length lies",
            False,
            [pdu(1, body[:68] + b"\x10\x00\xff\xff" + body[72:])],
        ),
        ("associate no contexts", False, [pdu(1, body[:68] + body[68:][: 4 + 21])]),
        ("associate wrong called AE", False, [raw.associate_rq(called="SOMEONEELSE")]),
        ("associate blank calling AE", False, [raw.associate_rq(calling=" ")]),
        (
            "associate unknown context only",
            False,
            [raw.associate_rq(contexts=[(1, "1.2.3.4.5", ["1.2.840.10008.1.2"])])],
        ),
        ("associate max pdu 0", False, [raw.associate_rq(max_pdu=0)]),
        ("associate twice in a row", False, [rq, rq]),
    ]
    for pdu_type, name in [
        (2, "ac"),
        (3, "rj"),
        (4, "p-data"),
        (5, "release-rq"),
        (6, "release-rp"),
        (7, "abort"),
    ]:
        cases.append((f"{name} before association", False, [pdu(pdu_type, bytes(4))]))
    cases.append(("echo p-data before association", False, [raw.echo_rq()]))
    for pdu_type in (0x00, 0x08, 0x53, 0xFF):
        cases.append((f"unknown pdu type 0x{pdu_type:02X}", False, [pdu(pdu_type, bytes(8))]))
    for seed in range(10):
        noise = random.Random(seed).randbytes(random.Random(seed).randint(1, 4096))
        cases.append((f"random bytes {seed}", False, [noise]))
    echo_cmd = raw.command_set(
        AffectedSOPClassUID=ECHO, CommandField=0x30, MessageID=1, CommandDataSetType=0x0101
    )
    after: list[tuple[str, list[bytes]]] = [
        ("p-data longer than max pdu", [struct.pack(">BBL", 4, 0, (4 << 20) + 1) + bytes(1024)]),
        ("p-data length 4 GiB", [struct.pack(">BBL", 4, 0, 0xFFFFFFFF) + bytes(64)]),
        ("pdv length longer than pdu", [raw.p_data(1, 3, echo_cmd, pdv_length=5000)]),
        ("pdv length shorter", [raw.p_data(1, 3, echo_cmd, pdv_length=3)]),
        ("empty p-data", [pdu(4, b"")]),
        ("unknown context id", [raw.p_data(99, 3, echo_cmd)]),
        (
            "command without command field",
            [raw.p_data(1, 3, raw.command_set(AffectedSOPClassUID=ECHO, MessageID=1))],
        ),
        ("command garbage", [raw.p_data(1, 3, rng.randbytes(200))]),
        (
            "command field unknown",
            [
                raw.p_data(
                    1,
                    3,
                    raw.command_set(
                        AffectedSOPClassUID=ECHO,
                        CommandField=0x7777,
                        MessageID=1,
                        CommandDataSetType=0x0101,
                    ),
                )
            ],
        ),
        ("dataset before command", [raw.p_data(3, 2, bytes(64))]),
        ("store then release without data", [raw.store_rq(CT, "1.2.3.4"), pdu(5, bytes(4))]),
        (
            "store then abort",
            [raw.store_rq(CT, "1.2.3.4"), raw.p_data(3, 0, bytes(100)), pdu(7, bytes(4))],
        ),
        ("store then close mid data", [raw.store_rq(CT, "1.2.3.5"), raw.p_data(3, 0, bytes(99))]),
        ("second associate rq", [rq]),
        ("associate ac from requestor", [pdu(2, body)]),
        ("release rp without rq", [pdu(6, bytes(4))]),
        ("unknown pdu 0x09 in association", [pdu(9, bytes(4))]),
        ("echo on ct context", [raw.echo_rq(context_id=3)]),
        ("http after association", [b"GET / HTTP/1.1\r\n\r\n"]),
        ("random after association", [rng.randbytes(3000)]),
        ("command truncated element", [raw.p_data(1, 3, echo_cmd[:-3])]),
    ]
    cases += [(name, True, data) for name, data in after]
    return cases


def _run_case(raw: Any, port: int, associate: bool, chunks: list[bytes]) -> None:
    peer = raw.Peer(port, timeout_s=3.0)
    try:
        if associate:
            reply = peer.associate()
            assert reply is not None and reply[0] == 0x02, "association not accepted"
        for chunk in chunks:
            try:
                peer.send(chunk)
            except OSError:
                break  # the SCP already dropped us: that is a fine answer
        peer.sock.settimeout(0.3)
        peer.closed_by_peer(0.3)
    finally:
        peer.close()


def _echo_within(scp: Any, limit_s: float) -> float:
    started = time.monotonic()
    assert scp.echo(timeout_s=limit_s) == 0
    return time.monotonic() - started


async def test_malformed_pdu_corpus(scp: Any, raw: Any) -> None:
    cases = _corpus(raw)
    assert len(cases) >= 50

    def run_all() -> list[str]:
        slow = []
        for name, associate, chunks in cases:
            _run_case(raw, scp.port, associate, chunks)
            took = _echo_within(scp, 1.0)
            if took > 1.0:
                slow.append(f"{name}: {took:.2f}s")
        return slow

    assert await asyncio.to_thread(run_all) == []
    rows = await scp.rows()
    assert rows["instances"] == 0 and rows["events"] == 0
    assert scp.stored_files() == []
    await _no_temp_files(scp)


async def _no_temp_files(scp: Any) -> None:
    for _ in range(40):
        if not scp.temp_files():
            return
        await asyncio.sleep(0.05)
    assert scp.temp_files() == []


@pytest.mark.parametrize("uid", ["../../etc/x", "1.2.3/../4", "..", "1.2.3\x00.4", "/abs/path"])
async def test_hostile_sop_instance_uids(scp: Any, dicom: Any, tmp_path: Any, uid: str) -> None:
    path = dicom.make_ct(tmp_path / "hostile.dcm", size=16)
    ds = __import__("pydicom").dcmread(path)
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid

    def send() -> int:
        from pynetdicom import AE

        ae = AE(ae_title="HOSTILE")
        assoc = ae.associate("127.0.0.1", scp.port, contexts=[_ct_context()], ae_title=scp.ae_title)
        assert assoc.is_established
        try:
            rsp = assoc.send_c_store(ds)
            return int(rsp.Status) if rsp else -1
        finally:
            if assoc.is_established:
                assoc.release()

    status = await asyncio.to_thread(send)
    assert status == 0x0110, hex(status)
    assert await asyncio.to_thread(_echo_within, scp, 1.0) < 1.0
    assert (await scp.rows())["instances"] == 0
    assert scp.stored_files() == []
    await _no_temp_files(scp)
    assert not list(tmp_path.parent.rglob("x")) or all(
        "etc" not in str(p) for p in tmp_path.parent.rglob("x")
    )


def _ct_context() -> Any:
    from pynetdicom import build_context

    return build_context(CT, "1.2.840.10008.1.2.1")


def _send_file_raw(port: int, ae_title: str, path: Any) -> int:
    """C-STORE the file's dataset bytes as they are (pynetdicom chunked send)."""
    from pynetdicom import AE, _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        ae = AE(ae_title="TRUNCSCU")
        assoc = ae.associate("127.0.0.1", port, contexts=[_ct_context()], ae_title=ae_title)
        assert assoc.is_established
        try:
            rsp = assoc.send_c_store(path)
            return int(rsp.Status) if rsp else -1
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False


@pytest.mark.parametrize("cut", ["mid-header", "mid-value", "mid-pixel-data"])
async def test_truncated_dataset_refused(scp: Any, dicom: Any, tmp_path: Any, cut: str) -> None:
    path = dicom.make_ct(tmp_path / "whole.dcm", size=64)
    data = path.read_bytes()
    pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")
    cut_at = {
        "mid-header": pixel_tag + 5,
        "mid-value": pixel_tag - 3,
        "mid-pixel-data": pixel_tag + 12 + 1000,
    }[cut]
    short = tmp_path / "short.dcm"
    short.write_bytes(data[:cut_at])
    status = await asyncio.to_thread(_send_file_raw, scp.port, scp.ae_title, short)
    assert status == 0x0110
    assert await asyncio.to_thread(_echo_within, scp, 1.0) < 1.0
    assert (await scp.rows())["instances"] == 0 and scp.stored_files() == []
    await _no_temp_files(scp)


async def test_too_deep_nesting_refused(scp: Any, dicom: Any, tmp_path: Any) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = dicom.base_dataset(CT)
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(70):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    path = dicom.save(ds, tmp_path / "deep.dcm", "1.2.840.10008.1.2.1")
    status = await asyncio.to_thread(_send_file_raw, scp.port, scp.ae_title, path)
    assert status == 0x0110
    assert (await scp.rows())["instances"] == 0 and scp.stored_files() == []


def _fault_after(limit: int) -> Callable[[int], None]:
    def fault(offset: int) -> None:
        if offset > limit:
            raise OSError(28, "No space left on device")

    return fault


async def test_disk_full_mid_transfer(scp_factory: Any, dicom: Any, tmp_path: Any) -> None:
    from cinebridge_scp.receive import ReceiveConfig

    def config(tmp: Any) -> ReceiveConfig:
        return ReceiveConfig(tmp, 1 << 30, fault=_fault_after(200_000))

    async with scp_factory(receive_config=config) as scp:
        small = dicom.make_ct(tmp_path / "small.dcm", size=64)  # 8 KB: fits
        big = dicom.make_ct(tmp_path / "big.dcm", size=512)  # 512 KB: disk "fills"
        statuses = await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, [big, small])
        assert statuses == [0xA700, 0x0000]
        rows = await scp.rows()
        assert rows["instances"] == 1 and len(scp.stored_files()) == 1
        await _no_temp_files(scp)


async def test_a_really_full_volume_answers_a700_and_recovers(
    tmp_path: Any, scp_factory: Any, dicom: Any
) -> None:
    """The media store on a small tmpfs filled to ENOSPC (a real full disk, not a seam): the
    C-STORE is answered 0xA700 (out of resources, the peer retries), nothing half-written stays,
    the SCP keeps serving, and the same instance is stored once space is back."""
    media = tmp_path / "media"
    media.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(media)], check=True)
    try:
        async with scp_factory() as scp:
            filler = media / "filler"
            with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * (64 << 10))
            big = dicom.make_ct(tmp_path / "big.dcm", size=512)  # 512 KB
            statuses = await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, [big])
            assert statuses == [0xA700]
            assert (await scp.rows())["instances"] == 0 and scp.stored_files() == []
            await _no_temp_files(scp)
            filler.unlink()
            statuses = await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, [big])
            assert statuses == [0x0000]
            assert (await scp.rows())["instances"] == 1 and len(scp.stored_files()) == 1
    finally:
        subprocess.run(["umount", "-l", str(media)], check=False)


async def test_size_limit_answers_a700(scp_factory: Any, dicom: Any, tmp_path: Any) -> None:
    async with scp_factory(scp_max_instance_bytes=100_000) as scp:
        big = dicom.make_ct(tmp_path / "big.dcm", size=512)
        statuses = await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, [big])
        assert statuses == [0xA700]
        assert scp.stored_files() == []
        await _no_temp_files(scp)


async def test_pdu_longer_than_negotiated_maximum_aborts(scp: Any, raw: Any) -> None:
    """PS3.8 D.1: exceeding the maximum length is a protocol error: A-ABORT, then close."""

    def oversize() -> tuple[int, bytes] | None:
        peer = raw.Peer(scp.port)
        try:
            assert peer.associate()[0] == 0x02
            peer.send(struct.pack(">BBL", 4, 0, scp.settings.scp_max_pdu + 1) + bytes(4096))
            reply = peer.read_pdu()
            assert peer.closed_by_peer(3)
            return reply  # type: ignore[no-any-return]
        finally:
            peer.close()

    reply = await asyncio.to_thread(oversize)
    assert reply is not None and reply[0] == 0x07  # A-ABORT
    assert reply[1][2:4] == bytes([2, 6])  # service provider, invalid PDU parameter value
    assert await asyncio.to_thread(_echo_within, scp, 1.0) < 1.0


async def test_largest_associate_rq_is_accepted(scp: Any, raw: Any) -> None:
    """128 contexts x 45 syntaxes (~190 KB) must pass the gate and the PDU guard."""
    from cinebridge_common.conformance import SCP_TRANSFER_SYNTAXES, STORAGE_SOP_CLASSES

    syntaxes = [uid for _, uid in SCP_TRANSFER_SYNTAXES]
    contexts = [(2 * n + 1, uid, syntaxes) for n, (_, uid) in enumerate(STORAGE_SOP_CLASSES[:128])]

    def associate() -> int:
        peer = raw.Peer(scp.port)
        try:
            reply = peer.associate(contexts=contexts)
            return -1 if reply is None else int(reply[0])
        finally:
            peer.close()

    assert len(raw.associate_rq(contexts=contexts)) > 150_000
    assert await asyncio.to_thread(associate) == 0x02


async def test_half_sent_store_is_dropped_after_the_dimse_timeout(
    scp_factory: Any, raw: Any
) -> None:
    """A peer that stops in the middle of a data set is aborted after CB_SCP_DIMSE_TIMEOUT_S
    (not the far longer idle timeout), and its partial file is removed."""
    async with scp_factory(scp_dimse_timeout_s=1.0, scp_network_timeout_s=30.0) as scp:

        def stall() -> tuple[bool, float, list[Any]]:
            peer = raw.Peer(scp.port, timeout_s=5.0)
            try:
                assert peer.associate()[0] == 0x02
                peer.send(raw.store_rq(CT, "1.2.3.4") + raw.p_data(3, 0, bytes(5000)))
                time.sleep(0.3)
                partial = scp.temp_files()
                started = time.monotonic()
                dropped = peer.closed_by_peer(5)
                return dropped, time.monotonic() - started, partial
            finally:
                peer.close()

        dropped, waited, partial = await asyncio.to_thread(stall)
        assert len(partial) == 1  # the data set was being received into a file
        assert dropped and waited < 3.0
        await _no_temp_files(scp)
        assert await asyncio.to_thread(_echo_within, scp, 1.0) < 1.0
