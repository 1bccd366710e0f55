"""Find every SQL statement of the station's code and migrations, the tables it changes and reads.

Python sources are parsed (`ast`): every string literal that is not a docstring is read as SQL
(f-string placeholders become `?`); `.sql` files are read whole, comments removed. A statement
changes a table when the table is the target of INSERT INTO, UPDATE ... SET, DELETE FROM,
TRUNCATE, COPY ... FROM, or of DDL (CREATE/ALTER/DROP TABLE, CREATE INDEX ... ON, CREATE VIEW).
It reads a relation named after FROM or JOIN (other than DELETE's own target); names that no
owner lists — common table expressions, set-returning functions, `EXTRACT(... FROM col)` — are
not relations of the station and are left out. The writer (or reader) is the part whose source
holds the statement: `services/<svc>/src` → `<svc>`, `libs/<lib>/src/cinebridge_<lib>` →
`<lib>`, a migration → the owner its folder or number names.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

_IDENT = r'"?([A-Za-z_][A-Za-z0-9_]*)"?'
_QUALIFIED = rf"(?:{_IDENT}\s*\.\s*)?{_IDENT}"

#: (kind, pattern); the last group that matched is the table.
_WRITES: list[tuple[str, re.Pattern[str]]] = [
    ("INSERT", re.compile(rf"\bINSERT\s+INTO\s+{_QUALIFIED}", re.I)),
    (
        "UPDATE",
        re.compile(
            rf"\bUPDATE\s+(?:ONLY\s+)?{_QUALIFIED}(?:\s+(?:AS\s+)?(?!SET\b)[A-Za-z_]\w*)?\s+SET\b",
            re.I,
        ),
    ),
    ("DELETE", re.compile(rf"\bDELETE\s+FROM\s+(?:ONLY\s+)?{_QUALIFIED}", re.I)),
    ("TRUNCATE", re.compile(rf"\bTRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?{_QUALIFIED}", re.I)),
    ("COPY", re.compile(rf"\bCOPY\s+{_QUALIFIED}\s*(?:\([^)]*\)\s*)?FROM\b", re.I)),
    (
        "CREATE TABLE",
        re.compile(
            rf"\bCREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_QUALIFIED}", re.I
        ),
    ),
    (
        "CREATE VIEW",
        re.compile(
            rf"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:MATERIALIZED\s+)?VIEW\s+"
            rf"(?:IF\s+NOT\s+EXISTS\s+)?{_QUALIFIED}",
            re.I,
        ),
    ),
    (
        "ALTER TABLE",
        re.compile(rf"\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_QUALIFIED}", re.I),
    ),
    ("DROP TABLE", re.compile(rf"\bDROP\s+(?:TABLE|VIEW)\s+(?:IF\s+EXISTS\s+)?{_QUALIFIED}", re.I)),
    (
        "CREATE INDEX",
        re.compile(
            rf"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
            rf"(?:\w+\s+)?ON\s+(?:ONLY\s+)?{_QUALIFIED}",
            re.I,
        ),
    ),
]

#: Migration number ranges by owner (`0xx` common, `1xx` scp, ... `6xx` gateway).
_MIGRATION_RANGES = {
    "0": "common",
    "1": "scp",
    "2": "converter",
    "3": "sender",
    "4": "worklist",
    "5": "capture",
    "6": "gateway",
}

#: Words after "TABLE"/"INTO"/... that are SQL, never a table name.
_NOT_TABLES = {"set", "select", "values", "only", "if", "exists", "not", "on", "as"}


@dataclass(frozen=True)
class Write:
    """One statement that changes `table`, found in `path` at `line`."""

    writer: str
    table: str
    kind: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.writer} {self.kind} {self.table}"


def writes_in_sql(text: str) -> Iterator[tuple[str, str, int]]:
    """(kind, table, offset) of every change `text` makes; offsets index into `text`."""
    for kind, pattern in _WRITES:
        for match in pattern.finditer(text):
            table = next(g for g in reversed(match.groups()) if g)
            if table.lower() not in _NOT_TABLES:
                yield kind, table.lower(), match.start()


_READ = re.compile(rf"\b(?:FROM|JOIN)\s+(?:ONLY\s+)?{_QUALIFIED}", re.I)
_DELETE_BEFORE = re.compile(r"\bDELETE\s*$", re.I)


def reads_in_sql(text: str) -> Iterator[tuple[str, int]]:
    """(relation, offset) of every name `text` reads after FROM or JOIN; DELETE FROM's target is
    a write, not a read. Offsets index into `text`."""
    for match in _READ.finditer(text):
        if _DELETE_BEFORE.search(text, max(0, match.start() - 16), match.start()):
            continue
        name = next(g for g in reversed(match.groups()) if g)
        if name.lower() not in _NOT_TABLES:
            yield name.lower(), match.start()


def _strip_sql_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group()), text, flags=re.S)
    return re.sub(r"--[^\n]*", "", text)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for stmt in body:
                # Any bare string statement is prose (docstrings, attribute docs), not SQL.
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    ids.add(id(stmt.value))
    return ids


def sql_literals(source: str) -> Iterator[tuple[str, int]]:
    """(text, line) of every string literal of a Python source that is not prose."""
    tree = ast.parse(source)
    prose = _docstring_nodes(tree)
    inside_fstring: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inside_fstring.add(id(value))
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                else:
                    parts.append("?")
            yield "".join(parts), node.lineno
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in prose
            and id(node) not in inside_fstring
        ):
            yield node.value, node.lineno


def writer_of(path: Path, root: Path) -> str | None:
    """The part a source file belongs to, or None when it belongs to none (tests, scripts)."""
    parts = path.relative_to(root).parts
    if len(parts) >= 4 and parts[0] in ("services", "libs") and parts[2] == "src":
        # The shared test support writes scratch tables of its own, wherever it lives.
        if parts[1] == "testkit" or "testing" in parts[4:-1]:
            return "testing"
        return parts[1]
    return None


def migration_owner(path: Path) -> str:
    """A migration's owner: the `cinebridge_<owner>` package it sits in, unless that is the
    common library's shared folder, where the file's number (or `R_<owner>_`) names it."""
    package = next((p for p in reversed(path.parts) if p.startswith("cinebridge_")), "")
    owner = package.removeprefix("cinebridge_")
    if owner and owner != "common":
        return owner
    name = path.name
    if name.startswith("R_"):
        return name[2:].split("_", 1)[0]
    return _MIGRATION_RANGES.get(name[0], "common")


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def scan_python(path: Path, root: Path, writer: str) -> Iterator[Write]:
    for text, line in sql_literals(path.read_text()):
        for kind, table, _ in writes_in_sql(text):
            yield Write(writer, table, kind, _rel(path, root), line)


def scan_migration(path: Path, root: Path) -> Iterator[Write]:
    text = _strip_sql_comments(path.read_text())
    owner = migration_owner(path)
    for kind, table, offset in writes_in_sql(text):
        yield Write(owner, table, kind, _rel(path, root), text.count("\n", 0, offset) + 1)


@dataclass(frozen=True)
class Read:
    """One statement that reads `table`, found in `path` at `line`."""

    reader: str
    table: str
    path: str
    line: int


def _sql_texts(path: Path, writer: str) -> Iterator[tuple[str, int, str]]:
    """(SQL text, first line, part) of a source file: a migration whole, a module's literals."""
    if path.suffix == ".sql":
        yield _strip_sql_comments(path.read_text()), 1, migration_owner(path)
    else:
        for text, line in sql_literals(path.read_text()):
            yield text, line, writer


def scan_reads(root: Path) -> list[Read]:
    """Every read of every service's and library's SQL (test support included)."""
    found = []
    for path, writer in source_files(root):
        for text, line, reader in _sql_texts(path, writer):
            for table, offset in reads_in_sql(text):
                found.append(
                    Read(reader, table, _rel(path, root), line + text.count("\n", 0, offset))
                )
    return found


def published_read_models(root: Path) -> dict[str, str]:
    """view → owner of each view published in an owner's repeatable `R_<owner>_read_model.sql`."""
    found = {}
    for path, _writer in source_files(root):
        if path.suffix == ".sql" and path.name.endswith("_read_model.sql"):
            text = _strip_sql_comments(path.read_text())
            for kind, view, _ in writes_in_sql(text):
                if kind == "CREATE VIEW":
                    found[view] = migration_owner(path)
    return found


def foreign_reads(
    reads: Iterable[Read], owners: dict[str, str], readable: Iterable[str]
) -> list[str]:
    """Each read of a relation owned by another part that is not one of `readable` (the
    published read models). Test support reads what it checks; relations nobody owns are not
    the station's (see the module's docstring)."""
    allowed = set(readable)
    problems = []
    for read in reads:
        owner = owners.get(read.table)
        if owner is None or owner == read.reader or read.reader == "testing":
            continue
        if read.table not in allowed:
            problems.append(
                f"{read.path}:{read.line}: {read.reader} reads {read.table}: owned by {owner}, "
                "which publishes no read model of it"
            )
    return problems


def source_files(root: Path) -> Iterator[tuple[Path, str]]:
    """(file, writer) for every Python source and migration of every service and library."""
    for top in ("services", "libs"):
        for path in sorted((root / top).glob("*/src/**/*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            writer = writer_of(path, root)
            if writer is not None and path.suffix in (".py", ".sql"):
                yield path, writer


def scan(root: Path) -> list[Write]:
    found: list[Write] = []
    for path, writer in source_files(root):
        if path.suffix == ".sql":
            found.extend(scan_migration(path, root))
        else:
            found.extend(scan_python(path, root, writer))
    return found


def _matches(write: Write, writer: str, table: str, path: str | None) -> bool:
    return (
        write.writer == writer
        and table in (write.table, "*")
        and (path is None or write.path == path)
    )


def violations(
    writes: Iterable[Write],
    owners: dict[str, str],
    excused: Iterable[tuple[str, str, str | None]],
) -> list[str]:
    """Each write of a table by a part that does not own it and is not excused, and each write
    of a table nobody owns. An excuse is (writer, table or `*`, path or None for anywhere)."""
    excuses = list(excused)
    problems = []
    for write in writes:
        owner = owners.get(write.table)
        if owner is None:
            problems.append(f"{write}: table {write.table!r} has no owner")
        elif owner != write.writer and not any(_matches(write, *e) for e in excuses):
            problems.append(f"{write}: owned by {owner}")
    return problems


def unused(
    writes: Iterable[Write], excused: Iterable[tuple[str, str, str | None]]
) -> list[tuple[str, str, str | None]]:
    """Excuses that no write needs any more (a pending move that was done)."""
    found = list(writes)
    return [e for e in excused if not any(_matches(w, *e) for w in found)]


#: A string literal that is a statement: what only a repository module may hold. Keywords in
#: capitals, as the house writes SQL, so that prose ("select a study") is not taken for SQL.
_STATEMENT = re.compile(
    r"^\s*(?:SELECT\s+(?:.*\bFROM\b|\w+\s*\()|INSERT\s+INTO\b|UPDATE\s+\w+|DELETE\s+FROM\b"
    r"|WITH\s+\w+\s+AS\b|TRUNCATE\b|ALTER\s+TABLE\b|COPY\s+\w+)",
    re.S,
)


def is_repository(path: Path) -> bool:
    """`repository.py`, `<what>_repository.py`, or any module of a `repository`/`repo` package."""
    return (
        path.stem == "repository"
        or path.stem.endswith("_repository")
        or any(p in ("repository", "repo") for p in path.parts[:-1])
    )


def statements_outside_repositories(root: Path) -> list[tuple[str, int]]:
    """(path, line) of each SQL statement in a service module that is not a repository."""
    found = []
    for path, _writer in source_files(root):
        if path.suffix != ".py" or path.relative_to(root).parts[0] != "services":
            continue
        if is_repository(path) or path.stem.startswith("test"):
            continue  # test support modules (peers, harnesses) are no production code
        for text, line in sql_literals(path.read_text()):
            if _STATEMENT.match(text):
                found.append((_rel(path, root), line))
    return found
