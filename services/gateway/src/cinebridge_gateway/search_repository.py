"""SQL of the local search and of study status, built without I/O (unit-testable).

Search texts become escaped LIKE prefixes on `lower(column)` (indexed with text_pattern_ops by
601_gateway.sql, and with the column itself for index-only counts by capture's
512_capture_search_bounds.sql); `*` and `?` are the DICOM wildcards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StudyFilter:
    q: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    origin: str | None = None
    status: str | None = None
    room: str | None = None
    limit: int = 50
    offset: int = 0


STUDY_COLUMNS = (
    "id, study_instance_uid, origin, room, patient_name, patient_id, patient_birth_date, "
    "patient_sex, accession_number, study_id, study_description, referring_physician, "
    "study_date, study_time, edited, state, created_at, updated_at, modality"
)

#: Study-level status derived from its media and deliveries (statement §4.1.3: "non-converted
#: and converted studies are marked accordingly among local search results"). `sent` needs
#: every media item converted and every instance of the study with deliveries, all delivered:
#: a study with an undelivered or unconverted item never shows `sent`.
STATUS_SQL = """
    CASE
      WHEN m.failed > 0 OR d.failed > 0 THEN 'failed'
      WHEN m.total > 0 AND m.converted = m.total AND d.total > 0 AND d.sent = d.total
           AND d.instances >= m.instances THEN 'sent'
      WHEN m.total > 0 AND m.converted = m.total THEN 'converted'
      ELSE 'non-converted'
    END"""

MEDIA_AGG = """
    LEFT JOIN LATERAL (
      SELECT count(*) FILTER (WHERE state <> 'deleted') AS total,
             count(*) FILTER (WHERE state = 'converted') AS converted,
             count(*) FILTER (WHERE state = 'failed') AS failed,
             (SELECT count(*) FROM converted_instances c WHERE c.study_id = s.id) AS instances
      FROM media WHERE media.study_id = s.id) m ON true"""

#: One Storage Commitment badge per study (PS3.4 Annex J; services/sender/README.md): over the
#: deliveries to destinations that require commitment, the worst state shows; NULL while none
#: of them is stored. An instance sent again because the archive did not commit it keeps the
#: study `requested`, never `committed`.
COMMITMENT_SQL = """
    CASE
      WHEN d.to_commit = 0 THEN NULL
      WHEN d.commit_failed > 0 THEN 'commit-failed'
      WHEN d.unsupported > 0 THEN 'unsupported'
      WHEN d.committed = d.to_commit AND d.commit_underway = 0 THEN 'committed'
      WHEN d.requested > 0 OR d.commit_resending > 0 THEN 'requested'
      ELSE 'sent'
    END"""

DELIVERY_AGG = """
    LEFT JOIN LATERAL (
      SELECT count(*) AS total,
             count(*) FILTER (WHERE state IN ('sent', 'warning')) AS sent,
             count(*) FILTER (WHERE state = 'failed-permanent') AS failed,
             count(DISTINCT instance_id) AS instances,
             count(*) FILTER (WHERE commitment_required
                              AND state IN ('sent', 'warning')) AS to_commit,
             count(*) FILTER (WHERE commitment_required
                              AND commitment = 'committed') AS committed,
             count(*) FILTER (WHERE commitment_required
                              AND commitment = 'failed') AS commit_failed,
             count(*) FILTER (WHERE commitment_required
                              AND commitment = 'unsupported') AS unsupported,
             count(*) FILTER (WHERE commitment_required
                              AND commitment = 'requested') AS requested,
             count(*) FILTER (WHERE commitment_required
                              AND state IN ('queued', 'sending', 'failed-retrying'))
                 AS commit_underway,
             count(*) FILTER (WHERE commitment_required AND commitment_requests > 0
                              AND state IN ('queued', 'sending', 'failed-retrying'))
                 AS commit_resending
      FROM delivery_states WHERE delivery_states.study_id = s.id) d ON true"""

NO_DELIVERIES = (
    " LEFT JOIN LATERAL (SELECT 0 AS total, 0 AS sent, 0 AS failed, 0 AS instances,"
    " 0 AS to_commit, 0 AS committed, 0 AS commit_failed, 0 AS unsupported, 0 AS requested,"
    " 0 AS commit_underway, 0 AS commit_resending)"
    " d ON true"
)


def like_prefix(value: str) -> str:
    """A user's search text as a LIKE prefix: `*` and `?` are DICOM wildcards (PS3.4 C.2.2.2.4)."""
    escaped = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    escaped = escaped.replace("*", "%").replace("?", "_")
    return escaped if escaped.endswith("%") else escaped + "%"


def prefix_range(value: str) -> tuple[str, str | None] | None:
    """The bounds `[low, high)` of every text that starts with the search text's literal part
    (before its first wildcard), in the byte order of `text_pattern_ops`, which is code point
    order for UTF-8; None when the text starts with a wildcard. `high` is None when no text is
    greater (a literal part of only U+10FFFF). The same range PostgreSQL derives from a constant
    LIKE prefix, but as parameters: a cached generic plan can then use the prefix indexes,
    which it cannot for `LIKE $1`."""
    literal = value.lower()
    for wildcard in ("*", "?"):
        literal = literal.split(wildcard, 1)[0]
    if not literal:
        return None
    high = literal
    while high:
        last = ord(high[-1]) + 1
        if last == 0xD800:  # surrogates are no characters of a text
            last = 0xE000
        if last <= 0x10FFFF:
            return literal, high[:-1] + chr(last)
        high = high[:-1]
    return literal, None


#: How many of the newest studies a search looks through (`_matches_page`).
RECENT_STUDIES = 2000
#: Up to how many matches a search takes through the indexes and sorts (`_matches_page`).
FEW_MATCHES = 200
#: A bound that no count reaches: the search has no indexed condition to count.
UNBOUNDED = 2**31 - 1


def _matches_page(where: str, window: str, bound: str) -> str:
    """The newest `window` local studies matching `where`, at a bounded cost whatever the data.

    `bound` is an upper bound of the matches, counted only up to `FEW_MATCHES` + 1 and through
    the covering prefix indexes alone (`_match_bounds`). Three ways, the first that applies, in
    one statement (PostgreSQL runs a branch only when its one-time filter holds):
    1. When the bound is at most `FEW_MATCHES`, every match is taken through the prefix and
       date indexes, unsorted (the LIMIT, which the bound makes no cut, keeps the planner from
       walking by time), and sorted here. Most searches by patient ID or accession number end here
       (a search that matches nothing costs an index probe instead of filtering the newest
       studies).
    2. The newest `RECENT_STUDIES` are filtered: when they hold a whole page it is the page
       (any match further back is older). A common name ends here.
    3. Every match through the indexes, sorted (OFFSET 0 keeps the planner from turning it into
       a walk by time). Accession numbers and study dates grow with time, so the matches of an
       old accession lie together far back: the walk by time filtered ~90,000 rows for them.

    The bound is counted apart from the matches: taking up to `FEW_MATCHES` + 1 matches
    themselves read every index entry of the prefix into a bitmap before its LIMIT (~4,200 for
    a common surname) and then their rows; the count stops at its cap in an index-only scan."""
    columns = _prefixed("s")
    return f"""
        WITH bound AS MATERIALIZED (SELECT {bound} AS n),
        recent AS MATERIALIZED (
          SELECT {columns} FROM (SELECT * FROM studies s ORDER BY s.created_at DESC
                                 LIMIT {RECENT_STUDIES}) s
          WHERE {where} AND (SELECT n FROM bound) > {FEW_MATCHES}
          ORDER BY s.created_at DESC LIMIT {window})
        (SELECT * FROM (SELECT {columns} FROM studies s
                        WHERE {where} AND (SELECT n FROM bound) <= {FEW_MATCHES}
                        LIMIT {FEW_MATCHES}) s
         ORDER BY s.created_at DESC LIMIT {window})
        UNION ALL
        SELECT * FROM recent WHERE (SELECT count(*) FROM recent) >= {window}
        UNION ALL
        (SELECT {columns} FROM (SELECT * FROM studies s WHERE {where} OFFSET 0) s
         WHERE (SELECT n FROM bound) > {FEW_MATCHES}
           AND (SELECT count(*) FROM recent) < {window}
         ORDER BY s.created_at DESC LIMIT {window})"""


def has_match_conditions(f: StudyFilter) -> bool:
    return any((f.q, f.patient_id, f.accession_number, f.date_from, f.date_to))


def build_search(
    f: StudyFilter, *, with_deliveries: bool, with_received: bool
) -> tuple[str, list[Any]] | None:
    """The LOCAL dialog's page: local studies and (statement §4.1.3 LOCAL: "created or
    received") studies the SCP received, newest first; each side is cut in SQL, then merged.
    A local study that came back through the station's own SCP (the default destination of an
    embedded run, or a PACS that forwards) is one row marked `received_back`, not a second one.
    Returns (SQL, arguments), or None when the filters exclude both sides."""
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    bounds: list[str] = []
    common = _match_conditions(f, arg, bounds)
    want_local = f.origin != "received" and f.status != "received"
    want_received = (
        with_received
        and f.origin in (None, "received")
        and f.room is None
        and f.status in (None, "received")
    )
    limit, offset = arg(f.limit), arg(f.offset)
    window = f"({limit}::int + {offset}::int)"
    parts = []
    if want_local:
        parts.append(_local_page(f, common, bounds, arg, window, with_deliveries, with_received))
    if want_received:
        parts.append(_received_page(common, window))
    if not parts:
        return None
    union = " UNION ALL ".join(f"({part})" for part in parts)
    sql = f"SELECT * FROM ({union}) u ORDER BY created_at DESC LIMIT {limit} OFFSET {offset}"
    return sql, args


def _local_page(
    f: StudyFilter,
    common: list[str],
    bounds: list[str],
    arg: Any,
    window: str,
    with_deliveries: bool,
    with_received: bool,
) -> str:
    where = list(common)
    if f.origin:
        where.append(f"s.origin = {arg(f.origin)}")
    if f.room:
        where.append(f"s.room = {arg(f.room)}")
    deliveries = DELIVERY_AGG if with_deliveries else NO_DELIVERIES
    # Without a status filter the page is cut before the lateral aggregates run.
    status_filter = f"WHERE status = {arg(f.status)}" if f.status else ""
    if f.status:
        page = f"SELECT {_prefixed('s')} FROM studies s WHERE {' AND '.join(where)}"
    elif has_match_conditions(f):
        bound = f"LEAST({', '.join(bounds)})" if bounds else str(UNBOUNDED)
        page = _matches_page(" AND ".join(where), window, bound)
    else:
        page = (
            f"SELECT {_prefixed('s')} FROM studies s WHERE {' AND '.join(where)}"
            f" ORDER BY s.created_at DESC LIMIT {window}"
        )
    received_back = (
        "EXISTS (SELECT 1 FROM received_study_index r"
        " WHERE r.study_instance_uid = p.study_instance_uid)"
        if with_received
        else "false"
    )
    return f"""
        SELECT * FROM (
          SELECT p.*, m.total AS media_count, {STATUS_SQL} AS status,
                 {received_back} AS received_back, {COMMITMENT_SQL} AS commitment
          FROM ({page}) p
          {MEDIA_AGG.replace("s.id", "p.id")}
          {deliveries.replace("s.id", "p.id")}
        ) x {status_filter}
        ORDER BY created_at DESC LIMIT {window}"""


def _capped_count(condition: str) -> str:
    """How many studies meet `condition`, counted up to `FEW_MATCHES` + 1 (an index-only scan
    of the covering prefix or date index: 512_capture_search_bounds.sql)."""
    cap = FEW_MATCHES + 1
    return f"(SELECT count(*) FROM (SELECT FROM studies b WHERE {condition} LIMIT {cap}) n)"


def _prefix_condition(column: str, value: str, arg: Any, bounds: list[str] | None) -> str:
    """`lower(column)` starts with the search text; with an index range, its capped count is
    added to `bounds` (an upper bound of the studies that meet the condition)."""
    like = f"lower(s.{column}) LIKE {arg(like_prefix(value))}"
    prefix = prefix_range(value)
    if prefix is None:
        return like
    low, high = prefix
    ranges = [f"lower({{t}}.{column}) ~>=~ {arg(low)}"]
    if high is not None:
        ranges.append(f"lower({{t}}.{column}) ~<~ {arg(high)}")
    in_range = " AND ".join(ranges)
    if bounds is not None:
        bounds.append(_capped_count(in_range.format(t="b")))
    # LIKE first: a row that does not match costs one lower() (a filter evaluates each).
    return f"({like} AND {in_range.format(t='s')})"


def _match_conditions(f: StudyFilter, arg: Any, bounds: list[str] | None = None) -> list[str]:
    """Conditions on columns that local and received studies share (alias `s`). For local
    studies, `bounds` receives one upper bound of the matches per indexed condition: each
    condition must hold, so the least of them bounds the matches."""
    where = ["true"]
    if f.q:
        # A match of any of the three: the sum of their counts bounds it.
        texts: list[str] = []
        conditions = [
            _prefix_condition(c, f.q, arg, texts)
            for c in ("patient_name", "patient_id", "accession_number")
        ]
        where.append("(" + " OR ".join(conditions) + ")")
        if bounds is not None and len(texts) == len(conditions):
            bounds.append(" + ".join(texts))
    if f.patient_id:
        where.append(_prefix_condition("patient_id", f.patient_id, arg, bounds))
    if f.accession_number:
        where.append(_prefix_condition("accession_number", f.accession_number, arg, bounds))
    dates = []
    if f.date_from:
        dates.append(f"{{t}}.study_date >= {arg(f.date_from)}")
    if f.date_to:
        dates.append(f"{{t}}.study_date <> '' AND {{t}}.study_date <= {arg(f.date_to)}")
    if dates:
        where.append(" AND ".join(dates).format(t="s"))
        if bounds is not None:
            bounds.append(_capped_count(" AND ".join(dates).format(t="b")))
    return where


def _received_page(common: list[str], window: str) -> str:
    """The SCP's received studies (its read model `received_study_index`) as search rows."""
    return f"""
        SELECT s.id, s.study_instance_uid, 'received' AS origin, NULL::text AS room,
               s.patient_name, s.patient_id, s.patient_birth_date, s.patient_sex,
               s.accession_number, s.study_id, s.study_description, s.referring_physician,
               s.study_date, s.study_time, false AS edited, 'received' AS state,
               s.first_received_at AS created_at, s.last_received_at AS updated_at,
               ''::text AS modality,
               s.instances AS media_count,
               'received' AS status, false AS received_back, NULL::text AS commitment
        FROM received_study_index s WHERE {" AND ".join(common)}
          AND NOT EXISTS (SELECT 1 FROM studies l WHERE l.study_instance_uid = s.study_instance_uid)
        ORDER BY s.first_received_at DESC LIMIT {window}"""


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in STUDY_COLUMNS.split(","))
