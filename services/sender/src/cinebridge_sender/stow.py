"""STOW-RS client (PS3.18 §10.5) and its echo (a QIDO-RS search, §10.6): Part 10 files streamed
from disk as `application/dicom` parts of one multipart/related request per batch, the answer
read per instance.

No NATS or database here: results go to an async callback as each response is read, like the
C-STORE client (`scu.py`), so the caller records them with the same delivery states.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .policy import Outcome, classify_status
from .scu import Item, ItemResult, Timeouts

#: File reads of 1 MB: a multi-GB video crosses the sender in pieces, never whole in memory.
CHUNK = 1 << 20
#: PS3.18 §10.5.1.2: the response is a Store Instances Response Module data set; we ask for JSON.
ACCEPT = "application/dicom+json"
# Attributes of the Store Instances Response Module (PS3.18 Table 10.5.3-1), DICOM JSON keys.
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
#: HTTP statuses after which the same request later may pass: the archive is busy, restarting or
#: behind a gateway that lost it (PS3.18 §8.7.3 lists 503 "Busy").
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
#: A Failed SOP Sequence item without a Failure Reason: recorded as the C-STORE "processing
#: failure" (PS3.7 C.4.2), which the C-STORE rules retry.
GENERIC_FAILURE = 0x0110

OnResult = Callable[[ItemResult], Awaitable[None]]


@dataclass(frozen=True)
class Archive:
    """A DICOMweb origin server as the sender reaches it."""

    base_url: str
    auth: httpx.Auth | None = None
    #: True (system CAs), False (no check) or a context holding a custom CA.
    verify: ssl.SSLContext | bool = True


class ArchiveFailed(Exception):
    """The request as a whole failed: no connection, refused, or an HTTP error for all of it.
    Same meaning as `scu.AssociationFailed` for the delivery states."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class BearerAuth(httpx.Auth):
    """RFC 6750 bearer token (the token is never part of a log line or an error)."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers["Authorization"] = self._header
        yield request


def make_auth(kind: str, username: str | None, secret: str | None) -> httpx.Auth | None:
    if kind == "basic":
        return httpx.BasicAuth(username or "", secret or "")
    if kind == "bearer":
        return BearerAuth(secret or "")
    return None


def verify_context(tls_verify: bool, ca_file: str | None) -> ssl.SSLContext | bool:
    """Certificate check of an https archive: the operating system's trusted CAs (where a
    hospital installs its own), or only `ca_file`'s; TLS 1.2 at least (PS3.15 B.1)."""
    if not tls_verify:
        return False
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def client(archive: Archive, timeouts: Timeouts) -> httpx.AsyncClient:
    """One client per batch: its connection is kept across the batch's requests."""
    return httpx.AsyncClient(
        # One connection per concurrent request stream (destination `max_associations`).
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        auth=archive.auth,
        verify=archive.verify,
        timeout=httpx.Timeout(
            connect=timeouts.connect_s,
            # Reading covers the archive's work after the upload (a large video is parsed and
            # stored before it answers), as the DIMSE timeout does for a C-STORE-RSP.
            read=timeouts.dimse_s,
            write=timeouts.network_s,
            pool=timeouts.connect_s,
        ),
        follow_redirects=False,
    )


def requests_of(items: Sequence[Item], sizes: dict[str, int], max_bytes: int) -> list[list[Item]]:
    """Split a batch into requests of at most `max_bytes` (one larger instance goes alone)."""
    out: list[list[Item]] = []
    current: list[Item] = []
    total = 0
    for item in items:
        size = sizes[item.key]
        if current and total + size > max_bytes:
            out.append(current)
            current, total = [], 0
        current.append(item)
        total += size
    if current:
        out.append(current)
    return out


def lanes_of(items: Sequence[Item], lanes: int) -> list[list[Item]]:
    """Deal a batch over up to `lanes` concurrent request streams (like the associations of a
    C-STORE batch: a handful of small instances is not worth a second connection)."""
    count = max(1, min(lanes, len(items) // 8))
    return [list(items[n::count]) for n in range(count) if items[n::count]]


async def send(
    http: httpx.AsyncClient,
    archive: Archive,
    items: Sequence[Item],
    on_result: OnResult,
    *,
    max_request_bytes: int,
    lanes: int = 1,
) -> None:
    """Store `items` (PS3.18 §10.5, POST {base}/studies) over up to `lanes` concurrent request
    streams, each in as few requests as `max_request_bytes` allows; `on_result` gets every
    instance's outcome once its request was answered. Raises ArchiveFailed when a request fails
    as a whole (after the other streams finished; what was answered was reported)."""
    sizes: dict[str, int] = {}
    present: list[Item] = []
    for item in items:
        try:
            sizes[item.key] = os.stat(item.path).st_size
            present.append(item)
        except OSError as exc:
            now = time.time()
            await on_result(
                ItemResult(item.key, "failed-permanent", None, f"file missing: {exc}", now, now)
            )

    async def stream(lane: list[Item]) -> None:
        for group in requests_of(lane, sizes, max_request_bytes):
            started = time.time()
            status, body = await _post(http, archive, group, sizes)
            for result in answer(status, body, group, started):
                await on_result(result)

    outcomes = await asyncio.gather(
        *(stream(lane) for lane in lanes_of(present, lanes)), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def _post(
    http: httpx.AsyncClient, archive: Archive, group: Sequence[Item], sizes: dict[str, int]
) -> tuple[int, Any]:
    boundary = secrets.token_hex(16)
    heads = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() for _ in group]
    tail = f"--{boundary}--\r\n".encode()
    # A length known in advance (no chunked encoding, which some archives refuse): the parts'
    # headers, the files, a CRLF after each file and the closing delimiter (RFC 2046 §5.1.1).
    length = sum(len(h) + sizes[i.key] + 2 for h, i in zip(heads, group, strict=True)) + len(tail)
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Content-Length": str(length),
        "Accept": ACCEPT,
    }
    url = f"{archive.base_url}/studies"
    try:
        response = await http.post(url, content=_body(group, heads, tail, sizes), headers=headers)
    except httpx.TransportError as exc:
        raise ArchiveFailed(_transport_reason(url, exc), transient=not _certificate(exc)) from None
    except _ShortFile as exc:
        raise ArchiveFailed(str(exc), transient=True) from None
    return response.status_code, _json(response)


class _ShortFile(Exception):
    """A file changed size while it was sent (the media store replaced it): send again."""


async def _body(
    group: Sequence[Item], heads: list[bytes], tail: bytes, sizes: dict[str, int]
) -> AsyncIterator[bytes]:
    for head, item in zip(heads, group, strict=True):
        yield head
        left = sizes[item.key]
        with open(item.path, "rb") as fh:  # noqa: ASYNC230 - reads run in a thread below
            while left:
                block = await asyncio.to_thread(fh.read, min(CHUNK, left))
                if not block:
                    raise _ShortFile(f"{item.path.name} shrank while it was sent")
                left -= len(block)
                yield block
        yield b"\r\n"
    yield tail


def _json(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _certificate(exc: httpx.TransportError) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _transport_reason(url: str, exc: httpx.TransportError) -> str:
    if _certificate(exc):
        return f"{url}: the archive's certificate was not verified"
    kind = type(exc).__name__
    return f"cannot reach {url}: {kind} {exc}".rstrip()


def answer(status: int, body: Any, group: Sequence[Item], started: float) -> list[ItemResult]:
    """Map a STOW-RS response (PS3.18 §10.5.3) to one result per instance. The Store Instances
    Response Module is read whatever the HTTP status (Orthanc answers 400 rather than 202 when
    some instances failed, docs/peers.md): Referenced SOP Sequence = stored (with a Warning
    Reason: warning); Failed SOP Sequence = the Failure Reason classified as a C-STORE status
    (statement Table 11, `policy.py`), so retries follow the same rules. An instance the
    response does not list takes the HTTP status's meaning; a status other than 200/202/409 with
    nothing listed concerns the whole request and raises ArchiveFailed (like a failed
    association: 5xx, 408, 429 retried, other 4xx permanent)."""
    referenced = _by_uid(body, REFERENCED_SOP_SEQUENCE, WARNING_REASON)
    failed = _by_uid(body, FAILED_SOP_SEQUENCE, FAILURE_REASON)
    if status not in (200, 202, 409) and not referenced and not failed:
        raise ArchiveFailed(
            f"STOW-RS answered HTTP {status}{_http_hint(status)}",
            transient=status in TRANSIENT_HTTP,
        )
    now = time.time()
    return [
        ItemResult(item.key, *_one(status, item.sop_instance_uid, referenced, failed), started, now)
        for item in group
    ]


def _one(
    status: int, uid: str, referenced: dict[str, int | None], failed: dict[str, int | None]
) -> tuple[Outcome, int | None, str | None]:
    """(outcome, status code, error) of one instance of a STOW-RS response."""
    if uid in failed:
        code = failed[uid]
        code = GENERIC_FAILURE if code is None else code
        verdict = classify_status(code)
        if verdict.outcome in ("sent", "warning"):  # a success code in the failure list
            return "failed-permanent", code, f"STOW-RS failed with reason {code:04X}"
        return verdict.outcome, code, f"STOW-RS failure reason {verdict.reason}"
    if uid in referenced:
        code = referenced[uid]
        if code is None:
            return "sent", 0x0000, None
        return "warning", code, f"STOW-RS warning reason {code:04X}"
    if status == 200:
        return "sent", 0x0000, None
    # Not listed: a 202 or a server error leaves it unknown, so it is sent again (the archive
    # keeps one copy per SOP Instance UID); a 409 or another client error says it was refused.
    if status == 202 or status in TRANSIENT_HTTP:
        return "failed-retrying", None, f"STOW-RS HTTP {status} did not list the instance"
    return "failed-permanent", None, f"STOW-RS HTTP {status}{_http_hint(status)}: not stored"


def _http_hint(status: int) -> str:
    return {
        400: " (bad request)",
        401: " (authentication refused)",
        403: " (not authorised)",
        404: " (no STOW-RS service at this base URL)",
        413: " (request too large)",
        415: " (application/dicom not accepted)",
        503: " (busy)",
    }.get(status, "")


def _by_uid(body: Any, sequence: str, reason: str) -> dict[str, int | None]:
    """SOP Instance UID -> reason code (None when absent) of the items of a response sequence."""
    out: dict[str, int | None] = {}
    if not isinstance(body, dict):
        return out
    for entry in (body.get(sequence) or {}).get("Value") or []:
        if not isinstance(entry, dict):
            continue
        uid = _first(entry, REFERENCED_SOP_INSTANCE_UID)
        if isinstance(uid, str):
            code = _first(entry, reason)
            out[uid] = int(code) if isinstance(code, int | float | str) and str(code) else None
    return out


def _first(entry: dict[str, Any], tag: str) -> Any:
    values = (entry.get(tag) or {}).get("Value") or []
    return values[0] if values else None


@dataclass(frozen=True)
class EchoResult:
    reachable: bool
    rtt_ms: float | None
    reason: str | None


async def echo(archive: Archive, timeout_s: float = 10.0) -> EchoResult:
    """A DICOMweb destination's echo: one QIDO-RS study search (PS3.18 §10.6, `limit=1`); 200 or
    204 (no studies) says the service answers and accepts our credentials."""
    limit = max(0.5, min(timeout_s, 10.0))
    timeouts = Timeouts(connect_s=limit, acse_s=limit, dimse_s=limit, network_s=limit)
    url = f"{archive.base_url}/studies"
    started = time.monotonic()
    async with client(archive, timeouts) as http:
        try:
            response = await http.get(url, params={"limit": "1"}, headers={"Accept": ACCEPT})
        except httpx.TransportError as exc:
            return EchoResult(False, None, _transport_reason(url, exc))
    rtt = round((time.monotonic() - started) * 1000, 2)
    if response.status_code in (200, 204):
        return EchoResult(True, rtt, None)
    hint = _http_hint(response.status_code)
    return EchoResult(False, rtt, f"QIDO-RS answered HTTP {response.status_code}{hint}")
