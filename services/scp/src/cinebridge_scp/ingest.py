"""From a received temp file to a stored, indexed instance, and the C-STORE status that says so.

Order (PS3.4 B.2.2, DESIGN "rules that keep data safe"): check the dataset is complete and
consistent with the command → fsync the file → rename it to a path built only from generated
ids → fsync the directory → commit its row and outbox event → only then 0x0000. Every failure
leaves no file and no row: 0x0110 (Table 24, processing failure: the data is at fault) or
0xA700 (out of resources: disk, size limit, database; PS3.4 Table B.2-1, the peer retries).

The row's statement runs while the file is made durable, but it commits only once the file,
its rename and its directory are fsync'd (group_index.py), so a committed row always names a
durable file; a row PostgreSQL loses in a crash is rebuilt from the file (recover.py). No NATS
here: the indexer is supplied by the composition root.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from cinebridge_common.conformance import (
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
)
from cinebridge_common.logging import kv
from cinebridge_common.store import MediaStore
from cinebridge_common.uids import is_valid_uid
from pydicom.charset import convert_encodings, decode_bytes

from . import metrics
from .receive import ReceiveFile
from .walk import MalformedDataset, walk_file

log = logging.getLogger(__name__)

#: Top-level attributes we index (PS3.6 tags), read as raw bytes by the walker.
TAGS: dict[str, tuple[int, int]] = {
    "charset": (0x0008, 0x0005),
    "sop_class_uid": (0x0008, 0x0016),
    "sop_instance_uid": (0x0008, 0x0018),
    "study_date": (0x0008, 0x0020),
    "study_time": (0x0008, 0x0030),
    "accession_number": (0x0008, 0x0050),
    "modality": (0x0008, 0x0060),
    "referring_physician": (0x0008, 0x0090),
    "study_description": (0x0008, 0x1030),
    "series_description": (0x0008, 0x103E),
    "patient_name": (0x0010, 0x0010),
    "patient_id": (0x0010, 0x0020),
    "patient_birth_date": (0x0010, 0x0030),
    "patient_sex": (0x0010, 0x0040),
    "study_instance_uid": (0x0020, 0x000D),
    "series_instance_uid": (0x0020, 0x000E),
    "study_id": (0x0020, 0x0010),
    "series_number": (0x0020, 0x0011),
    "instance_number": (0x0020, 0x0013),
    "number_of_frames": (0x0028, 0x0008),
}
UID_FIELDS = ("sop_class_uid", "sop_instance_uid", "study_instance_uid", "series_instance_uid")
_WANTED = frozenset(TAGS.values())


#: Instances up to this size are handed to the index before their fsyncs (group_index.py);
#: larger ones, whose fsync is long, once they are durable.
EARLY_INDEX_MAX_BYTES = 16 << 20


class Rejected(Exception):
    """An instance refused with its C-STORE status (PS3.4 B.2.3) and the reason logged."""

    def __init__(self, status: int, reason: str, *, keep_file: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        #: The durable file stays: its row's commit began and failed, so the row may exist
        #: and name it (the recovery sweep indexes the file if it does not).
        self.keep_file = keep_file


@dataclass(frozen=True)
class Command:
    """What the C-STORE-RQ command set and the association say."""

    sop_class_uid: str
    sop_instance_uid: str
    calling_ae: str
    source_address: str
    #: The association's log id (acceptor.Association.id), for the log lines of this store.
    association: str = ""


@dataclass(frozen=True)
class InstanceFacts:
    """Everything the index needs about one received instance."""

    attrs: dict[str, str]
    transfer_syntax_uid: str
    calling_ae: str
    source_address: str
    rel_path: str
    size: int
    sha256: str

    def __getitem__(self, key: str) -> str:
        return self.attrs.get(key, "")


@dataclass(frozen=True)
class IndexOutcome:
    instance_id: str
    replaced_rel_path: str | None = None
    kept_existing: bool = False


class IndexTicket(Protocol):
    """One instance handed to the index before its file is durable (group_index.Ticket)."""

    def durable(self) -> None:
        """Its file is fsync'd under its final name and the directory fsync'd: the row may
        now commit."""

    def abandon(self) -> bool:
        """Its row must never commit (the file is being removed); False when the commit had
        already begun."""

    def outcome(self, timeout_s: float) -> IndexOutcome:
        """The committed row; raises if the database is down or slower than `timeout_s`."""


class Indexer(Protocol):
    """Writes the row and outbox event of a checked instance, committed only once `durable()`
    was said (group_index.GroupIndexer)."""

    timeout_s: float

    def begin(self, facts: InstanceFacts) -> IndexTicket: ...


#: PS3.5 6.1.2.3: `\\` separates values, `=` and `^` PN groups and components; never part of a
#: multi-byte character in the repertoires pydicom decodes.
_DELIMITERS = {0x5C, 0x3D, 0x5E}


@functools.lru_cache(maxsize=64)
def _encodings(charset: bytes) -> tuple[str, ...]:
    """Python codecs of a Specific Character Set value (one per sender and setting, cached)."""
    terms = [t.strip() for t in charset.decode("ascii", "replace").split("\\")]
    return tuple(convert_encodings(terms or [""]))


def _text(value: bytes, encodings: tuple[str, ...]) -> str:
    """A text value in the instance's character set (PS3.5 6.1). Bytes below 0x80 without an
    ESC are the same characters in every repertoire of PS3.3 C.12.1.1.2 (ISO 2022 switches only
    with ESC sequences), so the common all-ASCII value skips pydicom's codec search."""
    if value.isascii() and b"\x1b" not in value:
        text = value.decode("ascii")
    else:
        text = decode_bytes(value, list(encodings), _DELIMITERS)
    return text.rstrip("\x00 ").strip()


def read_attributes(rf_path: str, size: int, max_depth: int) -> tuple[str, dict[str, str]]:
    """Walk the whole file; return its transfer syntax and decoded index attributes."""
    with open(rf_path, "rb") as fh:
        result = walk_file(fh, size, _WANTED, max_depth)
    values = result.values
    encodings = _encodings(values.get(TAGS["charset"], b""))
    attrs: dict[str, str] = {}
    for name, tag in TAGS.items():
        if name == "charset":
            continue
        value = values.get(tag, b"")
        if name in UID_FIELDS:
            attrs[name] = value.rstrip(b"\x00 ").decode("ascii", "replace")
        else:
            attrs[name] = _text(value, encodings)
    # (0002,0016) Source Application Entity Title: the sender, as recorded on receipt.
    source = result.meta.get((0x0002, 0x0016), b"")
    attrs["source_ae"] = source.decode("ascii", "replace").strip("\x00 ")
    return result.transfer_syntax, attrs


def check_consistency(attrs: dict[str, str], command: Command) -> None:
    """PS3.4 B.2.3 / PS3.7 9.1.1: the dataset must be the instance the command announces."""
    for name in UID_FIELDS:
        if not is_valid_uid(attrs[name]):
            raise Rejected(STATUS_PROCESSING_FAILURE, f"{name} missing or not a valid UID")
    if attrs["sop_class_uid"] != command.sop_class_uid:
        raise Rejected(STATUS_PROCESSING_FAILURE, "SOP Class UID differs from the command")
    if attrs["sop_instance_uid"] != command.sop_instance_uid:
        raise Rejected(STATUS_PROCESSING_FAILURE, "SOP Instance UID differs from the command")


class Ingest:
    """Runs in the association's thread (cinebridge_dicom's acceptor), one C-STORE at a time
    per association."""

    def __init__(self, store: MediaStore, index: Indexer, max_depth: int) -> None:
        self.store = store
        self._root = str(store.root)
        self.index = index
        self.max_depth = max_depth
        #: Outcome counts for the heartbeat detail: "stored", "0110", "A700".
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1

    def store_instance(self, rf: ReceiveFile, command: Command) -> int:
        """Return the C-STORE status; on anything but success nothing is left behind, except the
        durable file of a row whose commit outcome is unknown (`Rejected.keep_file`)."""
        rel_path: str | None = None
        started = time.perf_counter()
        try:
            if rf.error is not None:
                failed = STATUS_PROCESSING_FAILURE
                raise Rejected(STATUS_OUT_OF_RESOURCES if rf.out_of_resources else failed, rf.error)
            facts = self._check(rf, command)
            rel_path = facts.rel_path
            outcome = self._store(rf, facts)
        except Rejected as exc:
            self._cleanup(rf, None if exc.keep_file else rel_path)
            self._count(f"{exc.status:04X}")
            metrics.INSTANCES_REFUSED.labels(f"{exc.status:04X}").inc()
            metrics.STORE_SECONDS.observe(time.perf_counter() - started)
            log.warning(
                "store refused",
                extra=kv(
                    status=f"0x{exc.status:04X}",
                    reason=exc.reason,
                    calling_ae=command.calling_ae,
                    association=command.association,
                ),
            )
            return exc.status
        except BaseException:
            self._cleanup(rf, rel_path)
            raise
        self._count("stored")
        metrics.INSTANCES_RECEIVED.inc()
        metrics.RECEIVED_BYTES.inc(facts.size)
        metrics.STORE_SECONDS.observe(time.perf_counter() - started)
        if outcome.kept_existing:
            self.store.delete(facts.rel_path)  # keep-first: the earlier copy stays
        elif outcome.replaced_rel_path:
            with contextlib.suppress(Exception):
                self.store.delete(outcome.replaced_rel_path)
        if not log.isEnabledFor(logging.DEBUG):
            return STATUS_SUCCESS
        # Per instance at DEBUG only: at INFO the line cost ~0.1 ms of CPU per instance (a few %
        # of the SCP's); the association's end logs its counts, refusals are warnings each.
        log.debug(
            "stored",
            extra=kv(
                instance=outcome.instance_id,
                association=command.association,
                size=facts.size,
                sop_instance_uid=command.sop_instance_uid,
                kept_existing=outcome.kept_existing,
                replaced=outcome.replaced_rel_path is not None,
            ),
        )
        return STATUS_SUCCESS

    def _check(self, rf: ReceiveFile, command: Command) -> InstanceFacts:
        """Walk the received bytes and build the index facts (the file is not durable yet)."""
        try:
            size, sha256 = rf.seal()
        except OSError as exc:
            raise Rejected(STATUS_OUT_OF_RESOURCES, f"write failed: {exc.strerror}") from exc
        try:
            ts, attrs = read_attributes(rf.name, size, self.max_depth)
        except MalformedDataset as exc:
            raise Rejected(STATUS_PROCESSING_FAILURE, f"malformed dataset: {exc}") from exc
        check_consistency(attrs, command)
        rel_path = self.store.new_relative("received", "dcm")
        return InstanceFacts(
            attrs, ts, command.calling_ae, command.source_address, rel_path, size, sha256
        )

    def _store(self, rf: ReceiveFile, facts: InstanceFacts) -> IndexOutcome:
        """Make the file durable while its row is written; the row commits after the fsyncs.

        A large instance (a video) is handed over only once durable: its fsync may take
        seconds, and the group it joined would hold the rows of other associations that long.
        """
        early = facts.size <= EARLY_INDEX_MAX_BYTES
        ticket = self._begin(facts) if early else None
        try:
            with metrics.FSYNC_SECONDS.time():
                self._sync_and_rename(rf, facts.rel_path)
            ticket = ticket or self._begin(facts)
            ticket.durable()
            started = time.perf_counter()
            outcome = ticket.outcome(self.index.timeout_s)
        except Rejected:
            if ticket is not None:
                ticket.abandon()
            raise
        except Exception as exc:
            unknown = ticket is not None and not ticket.abandon()
            if unknown:
                # Its commit began and failed: whether the row exists is unknown. The file
                # stays, so a row that did commit never names a missing file (the peer's retry
                # would then be kept-first against it and the instance lost); a file without
                # its row is indexed by the recovery sweep (recover.py).
                log.warning("index commit failed", extra=kv(rel_path=facts.rel_path))
            # Database down or too slow: the peer must retry later (PS3.4 B.2.3, A7xx).
            raise Rejected(
                STATUS_OUT_OF_RESOURCES, f"index failed: {exc!r}"[:300], keep_file=unknown
            ) from exc
        except BaseException:
            if ticket is not None:
                ticket.abandon()
            raise
        metrics.INDEX_SECONDS.observe(time.perf_counter() - started)
        return outcome

    def _begin(self, facts: InstanceFacts) -> IndexTicket:
        try:
            return self.index.begin(facts)
        except Exception as exc:
            raise Rejected(STATUS_OUT_OF_RESOURCES, f"index failed: {exc!r}"[:300]) from exc

    def _sync_and_rename(self, rf: ReceiveFile, rel_path: str) -> None:
        """fsync the file, rename it to its generated path, fsync the directory."""
        try:
            rf.finish()
        except OSError as exc:
            raise Rejected(STATUS_OUT_OF_RESOURCES, f"fsync failed: {exc.strerror}") from exc
        try:
            self._move_into_place(rf.name, rel_path)
        except OSError as exc:
            raise Rejected(STATUS_OUT_OF_RESOURCES, f"commit failed: {exc.strerror}") from exc

    def _move_into_place(self, temp: str, rel_path: str) -> None:
        """`MediaStore.commit_temp` for a name `_check` generated (`new_relative`): the same
        rename and directory fsync, without validating and resolving again a name that cannot
        leave the store (a realpath, a dozen lstat calls, per instance), and the day's folder
        made when a rename finds it missing rather than before every instance."""
        final = os.path.join(self._root, rel_path)
        folder = os.path.dirname(final)
        try:
            os.replace(temp, final)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            os.replace(temp, final)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _cleanup(self, rf: ReceiveFile, rel_path: str | None) -> None:
        rf.discard()
        if rel_path is not None:
            with contextlib.suppress(Exception):
                self.store.delete(rel_path)
