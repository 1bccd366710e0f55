"""The SQL-ownership checker itself: it finds the writes it must, and a planted one fails."""

from __future__ import annotations

from pathlib import Path

from .sql_ownership import (
    Read,
    Write,
    foreign_reads,
    migration_owner,
    published_read_models,
    reads_in_sql,
    scan,
    scan_reads,
    sql_literals,
    statements_outside_repositories,
    unused,
    violations,
    writes_in_sql,
)

OWNERS = {
    "studies": "capture",
    "media": "capture",
    "outbox": "common",
    "instances": "converter",
    "converted_instances": "converter",
}


def _tables(sql: str) -> list[tuple[str, str]]:
    return sorted((kind, table) for kind, table, _ in writes_in_sql(sql))


def test_statements_name_their_target() -> None:
    assert _tables("INSERT INTO studies (id) VALUES ($1)") == [("INSERT", "studies")]
    assert _tables("update public.media m set state = 'x'") == [("UPDATE", "media")]
    assert _tables('DELETE FROM "studies" s WHERE s.id = $1') == [("DELETE", "studies")]
    assert _tables("TRUNCATE TABLE media") == [("TRUNCATE", "media")]
    assert _tables("ALTER TABLE studies ADD COLUMN x text") == [("ALTER TABLE", "studies")]
    assert _tables("CREATE INDEX media_x ON media (x)") == [("CREATE INDEX", "media")]
    assert _tables("COPY media (id) FROM STDIN") == [("COPY", "media")]


def test_reads_and_locks_are_not_writes() -> None:
    assert _tables("SELECT * FROM studies FOR UPDATE SKIP LOCKED") == []
    assert _tables("INSERT INTO outbox (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 1") == [
        ("INSERT", "outbox")
    ]
    assert _tables("SELECT s.id INTO v_study FROM studies s") == []


def test_fstrings_are_read_and_docstrings_are_not() -> None:
    source = '''
"""Module prose: UPDATE studies SET nothing."""
def f(columns):
    """UPDATE media SET nothing either."""
    return f"INSERT INTO studies ({columns}) VALUES ($1)", "DELETE FROM " "media"
'''
    found = sorted({t for text, _ in sql_literals(source) for _, t, _ in writes_in_sql(text)})
    assert found == ["media", "studies"]


def _plant(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_planted_foreign_write_fails(tmp_path: Path) -> None:
    _plant(
        tmp_path,
        "services/capture/src/cinebridge_capture/repository.py",
        'Q = "INSERT INTO media (id) VALUES ($1)"\n',
    )
    _plant(
        tmp_path,
        "services/gateway/src/cinebridge_gateway/repository.py",
        'async def f(pool):\n    await pool.execute("UPDATE studies SET state = $1", "x")\n',
    )
    writes = scan(tmp_path)
    assert writes == [
        Write(
            "capture", "media", "INSERT", "services/capture/src/cinebridge_capture/repository.py", 1
        ),
        Write(
            "gateway",
            "studies",
            "UPDATE",
            "services/gateway/src/cinebridge_gateway/repository.py",
            2,
        ),
    ]
    problems = violations(writes, OWNERS, [])
    assert problems == [
        "services/gateway/src/cinebridge_gateway/repository.py:2: gateway UPDATE studies: "
        "owned by capture"
    ]
    excuse = ("gateway", "studies", "services/gateway/src/cinebridge_gateway/repository.py")
    assert violations(writes, OWNERS, [excuse]) == []
    # An excuse for another file does not cover it; one nothing needs is reported as stale.
    elsewhere = ("gateway", "studies", "services/gateway/src/cinebridge_gateway/other.py")
    assert violations(writes, OWNERS, [elsewhere]) == problems
    assert unused(writes, [excuse, elsewhere]) == [elsewhere]


def test_a_table_without_owner_fails(tmp_path: Path) -> None:
    _plant(tmp_path, "services/scp/src/cinebridge_scp/repository.py", 'Q = "DELETE FROM mystery"\n')
    assert violations(scan(tmp_path), OWNERS, []) == [
        "services/scp/src/cinebridge_scp/repository.py:1: scp DELETE mystery: table 'mystery' "
        "has no owner"
    ]


def test_migrations_belong_to_their_folder_or_number(tmp_path: Path) -> None:
    shared = Path("libs/common/src/cinebridge_common/migrations")
    assert migration_owner(shared / "002_studies.sql") == "common"
    assert migration_owner(shared / "402_studies_modality.sql") == "worklist"
    assert migration_owner(shared / "R_scp_index_instance.sql") == "scp"
    assert migration_owner(Path("services/capture/src/cinebridge_capture/migrations/001.sql")) == (
        "capture"
    )
    _plant(
        tmp_path,
        "libs/common/src/cinebridge_common/migrations/605_gateway_x.sql",
        "-- ALTER TABLE media in a comment is no change\nALTER TABLE studies ADD COLUMN x text;\n",
    )
    assert violations(scan(tmp_path), OWNERS, []) == [
        "libs/common/src/cinebridge_common/migrations/605_gateway_x.sql:2: gateway ALTER TABLE "
        "studies: owned by capture"
    ]


def test_sql_outside_a_repository_is_found(tmp_path: Path) -> None:
    _plant(
        tmp_path,
        "services/gateway/src/cinebridge_gateway/routes_x.py",
        'Q = "SELECT id FROM studies"\nNOT_SQL = "select a study"\n',
    )
    _plant(
        tmp_path,
        "services/gateway/src/cinebridge_gateway/studies_repository.py",
        'Q = "SELECT id FROM studies"\n',
    )
    assert statements_outside_repositories(tmp_path) == [
        ("services/gateway/src/cinebridge_gateway/routes_x.py", 1)
    ]


def test_reads_name_their_relations() -> None:
    sql = """WITH recent AS (SELECT id FROM studies s JOIN media m ON m.study_id = s.id)
             SELECT extract(epoch FROM now()), r.id FROM recent r
             LEFT JOIN ONLY public.converted_instances c ON true, unnest($1::uuid[]) u"""
    # Every name is found; the ones no owner lists (`now`, the CTE `recent`) are dropped later.
    assert [t for t, _ in reads_in_sql(sql)] == [
        "studies",
        "media",
        "now",
        "recent",
        "converted_instances",
    ]
    # DELETE's target is a write; what it reads through USING or a subquery is a read.
    assert [t for t, _ in reads_in_sql("DELETE FROM media WHERE id IN (SELECT id FROM x)")] == ["x"]


def test_a_planted_foreign_read_fails(tmp_path: Path) -> None:
    _plant(
        tmp_path,
        "services/converter/src/cinebridge_converter/migrations/R_converter_read_model.sql",
        "-- SELECT * FROM studies in a comment is no read\n"
        "CREATE OR REPLACE VIEW converted_instances AS\n    SELECT id FROM instances;\n",
    )
    _plant(
        tmp_path,
        "services/gateway/src/cinebridge_gateway/repository.py",
        'A = "SELECT id FROM converted_instances"\n'
        'B = """SELECT s.id\n    FROM studies s JOIN instances i ON i.study_id = s.id"""\n',
    )
    reads = scan_reads(tmp_path)
    gateway = "services/gateway/src/cinebridge_gateway/repository.py"
    assert sorted(reads, key=str) == sorted(
        [
            Read(
                "converter",
                "instances",
                "services/converter/src/cinebridge_converter/migrations/R_converter_read_model.sql",
                3,
            ),
            Read("gateway", "converted_instances", gateway, 1),
            Read("gateway", "studies", gateway, 3),
            Read("gateway", "instances", gateway, 3),
        ],
        key=str,
    )
    published = published_read_models(tmp_path)
    assert published == {"converted_instances": "converter"}
    # The converter's own table through its view, the catalog's table as published: no problem;
    # the converter's table itself: one.
    assert foreign_reads(reads, OWNERS, {*published, "studies"}) == [
        f"{gateway}:3: gateway reads instances: owned by converter, which publishes no read "
        "model of it"
    ]
    # Without the catalog published, its table is a foreign read too.
    assert len(foreign_reads(reads, OWNERS, published)) == 2
