"""Database roles by duty (worker_app/db/privileges.py): each duty's login role can do its stage's work and
nothing else. The whole suite runs its workers with these roles (tests/services.py writes each duty's URL to the
env file, and each worker picks its queues' duty), so every other test is also a proof of "can"; this one tries
each "cannot" on the real server: DROP, TRUNCATE, ALTER, CREATE, and every write the map does not give."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from tests.audio_factory import make_library
from worker_app.db.models import Base
from worker_app.db.privileges import (
    DUTIES,
    PRIVILEGES,
    QUEUE_DUTIES,
    _privilege_set,
    covers,
    duty_for_queues,
    missing_tables,
    table_columns,
)
from worker_app.settings import ConfigurationError, load_settings

INSUFFICIENT_PRIVILEGE = "42501"


@pytest.fixture(scope="module")
def engines(stack):
    made = {duty: create_engine(stack.postgres.duty_url(duty), pool_size=1) for duty in DUTIES}
    yield made
    for engine in made.values():
        engine.dispose()


def attempt(engine, statement: str) -> str | None:
    """Run ``statement`` in a transaction that is always rolled back; None when the server ran it, else the
    SQLSTATE of its error. Whatever a wrongly allowed statement did is undone."""
    with engine.connect() as connection:
        connection.execute(text("SET lock_timeout = '5s'"))
        try:
            connection.execute(text(statement))
        except DBAPIError as error:
            return str(error.orig.pgcode)
        finally:
            connection.rollback()
    return None


def write_statements(table: str, columns: list[str]) -> dict[tuple[str, str | None], str]:
    """One statement per (privilege, column). PostgreSQL checks a statement's privileges before it reads a row, so
    "WHERE false" costs nothing, takes no row lock from the workers, and is refused exactly as the same write of
    every row would be."""
    statements: dict[tuple[str, str | None], str] = {
        ("INSERT", None): f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {table} "
                          f"WHERE false",
        ("DELETE", None): f"DELETE FROM {table} WHERE false",
    }
    for column in columns:
        statements[("UPDATE", column)] = f"UPDATE {table} SET {column} = {column} WHERE false"
    return statements


def test_every_table_of_the_schema_has_its_privileges_in_the_map(stack):
    engine = create_engine(stack.postgres.url)
    with engine.connect() as connection:
        assert missing_tables(connection) == []
    engine.dispose()
    assert set(Base.metadata.tables) | {"alembic_version"} == set(PRIVILEGES)


def test_a_table_missing_from_the_map_fails_the_grant(stack):
    stack.postgres.psql("CREATE TABLE forgotten_table (id integer)")
    try:
        result = stack.soniquebay("db", "grant", check=False)
        assert result.returncode != 0
        assert "forgotten_table" in result.stderr + result.stdout
    finally:
        stack.postgres.psql("DROP TABLE forgotten_table")
    granted = json.loads(stack.soniquebay("db", "grant").stdout)
    assert granted["granted"] == [stack.postgres.duty_role(duty) for duty in DUTIES]
    assert granted["changed"] is False  # the upgrade had given them already: running it again changes nothing


@pytest.mark.parametrize("duty", DUTIES)
def test_no_duty_can_drop_truncate_alter_or_create(engines, duty):
    engine = engines[duty]
    for table in sorted(PRIVILEGES):
        assert attempt(engine, f"DROP TABLE {table} CASCADE") == INSUFFICIENT_PRIVILEGE, (duty, table)
        assert attempt(engine, f"TRUNCATE {table} CASCADE") == INSUFFICIENT_PRIVILEGE, (duty, table)
        assert attempt(engine, f"ALTER TABLE {table} ADD COLUMN intruder text") == INSUFFICIENT_PRIVILEGE, (
            duty, table)
        assert attempt(engine, f"ALTER TABLE {table} DISABLE TRIGGER ALL") == INSUFFICIENT_PRIVILEGE, (duty, table)
    assert attempt(engine, "CREATE TABLE intruder (id integer)") == INSUFFICIENT_PRIVILEGE, duty
    assert attempt(engine, "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'") \
        == INSUFFICIENT_PRIVILEGE, duty


@pytest.mark.parametrize("duty", DUTIES)
def test_each_duty_writes_exactly_what_the_map_gives_it(engines, duty):
    """Every write statement on every table and column: allowed where the map says, refused everywhere else."""
    engine = engines[duty]
    columns = table_columns()
    allowed_anywhere, refused = [], []
    for table in sorted(PRIVILEGES):
        allowed = _privilege_set(PRIVILEGES[table][duty], columns[table])
        assert attempt(engine, f"SELECT * FROM {table} LIMIT 1") is None, (duty, table)
        for privilege, statement in write_statements(table, columns[table]).items():
            outcome = attempt(engine, statement)
            if privilege in allowed:
                assert outcome != INSUFFICIENT_PRIVILEGE, (duty, statement, outcome)
                allowed_anywhere.append(statement)
            else:
                assert outcome == INSUFFICIENT_PRIVILEGE, (duty, statement, outcome)
                refused.append(statement)
    if duty == "reader":
        assert allowed_anywhere == []
    assert refused


def test_an_extract_host_cannot_touch_the_catalogue(engines, stack, library_root):
    """A compromised extract host, with rows in the tables: the ledger role (scan, extract and batch hosts) cannot
    delete, change or add a track, nor point a scan at another root, while it can do its own bookkeeping."""
    library = make_library(library_root / "db-roles", n_files=6, seed=1313)
    result = stack.soniquebay("scan", str(library.root), "--wait", "--json", "--timeout", "300", check=False)
    assert result.returncode == 0, result.stderr + stack.diagnostics()
    scan_id = json.loads(result.stdout)["scan_id"]
    ledger = engines["ledger"]
    for statement in ("DELETE FROM tracks", "UPDATE tracks SET title = 'owned'", "DELETE FROM albums",
                      "DELETE FROM artists", "DELETE FROM covers", "UPDATE albums SET cover_id = NULL",
                      "INSERT INTO tracks (path, folder, size_bytes, mtime) VALUES ('/x', '/', 1, 1)",
                      f"UPDATE scans SET root = '/' WHERE id = {scan_id}", "DELETE FROM scan_units",
                      "DELETE FROM scans", "TRUNCATE tracks", "DROP TABLE tracks"):
        assert attempt(ledger, statement) == INSUFFICIENT_PRIVILEGE, statement
    # Its own work, on the same rows.
    for statement in (f"UPDATE scans SET discovered = discovered WHERE id = {scan_id}",
                      f"UPDATE scan_units SET deliveries = deliveries WHERE scan_id = {scan_id}",
                      "SELECT path, size_bytes, mtime FROM tracks"):
        assert attempt(ledger, statement) is None, statement
    reader = engines["reader"]
    for statement in ("DELETE FROM tracks", f"UPDATE scans SET status = 'failed' WHERE id = {scan_id}",
                      "INSERT INTO scans (root) VALUES ('/')"):
        assert attempt(reader, statement) == INSUFFICIENT_PRIVILEGE, statement


def test_the_workers_connected_with_their_duties(stack, library_root):
    """After the scan above: the extract and insert workers' connections belong to their duties' roles."""
    engine = create_engine(stack.postgres.url)
    with engine.connect() as connection:
        users = set(connection.execute(text(
            "SELECT usename FROM pg_stat_activity WHERE datname = current_database()")).scalars())
    engine.dispose()
    assert {stack.postgres.duty_role("ledger"), stack.postgres.duty_role("catalogue")} <= users, users


def test_a_worker_takes_the_duty_of_its_queues():
    columns = table_columns()
    assert covers("catalogue", "ledger", columns) and not covers("ledger", "catalogue", columns)
    for duty in DUTIES:
        assert covers(duty, "reader", columns)
    assert {queue: duty_for_queues([queue]) for queue in QUEUE_DUTIES} == QUEUE_DUTIES
    assert duty_for_queues(["extract", "insert"]) == "catalogue"
    assert duty_for_queues(["scan", "batch"]) == "ledger"
    assert duty_for_queues([]) == "catalogue"


def test_a_worker_never_falls_back_to_the_owner(monkeypatch, tmp_path):
    monkeypatch.setenv("SONIQUEBAY_ENV_FILE", str(tmp_path / "none.env"))
    for duty in DUTIES:
        monkeypatch.delenv(f"SONIQUEBAY_DATABASE_URL_{duty.upper()}", raising=False)
    monkeypatch.setenv("SONIQUEBAY_DATABASE_URL", "postgresql+psycopg2://owner:secret@db/soniquebay")
    monkeypatch.setenv("SONIQUEBAY_DATABASE_URL_LEDGER", "postgresql+psycopg2://ledger:secret@db/soniquebay")
    settings = load_settings()
    with pytest.raises(ConfigurationError, match="SONIQUEBAY_DATABASE_URL_CATALOGUE"):
        settings.database_url_for("catalogue", owner_fallback=False)
    assert settings.database_url_for("ledger", owner_fallback=False).startswith("postgresql+psycopg2://ledger:")
    # The command line's read commands use a duty that covers reading (here the ledger's) before the owner's.
    assert settings.database_url_for("reader").startswith("postgresql+psycopg2://ledger:")
    assert settings.database_url_for(None).startswith("postgresql+psycopg2://owner:")


def test_the_ansible_roles_know_the_same_duties():
    """The postgresql role creates a role per duty of the map, and the worker_app role gives each queue group the
    duty its workers take (the monitor and scan groups also read and start scans)."""
    import yaml

    from tests.services import REPO

    postgresql = yaml.safe_load((REPO / "roles/postgresql/defaults/main.yml").read_text())
    assert tuple(postgresql["postgresql_duty_passwords"]) == DUTIES
    worker_app = yaml.safe_load((REPO / "roles/worker_app/defaults/main.yml").read_text())
    groups = worker_app["worker_app_group_duties"]
    for queue, duty in QUEUE_DUTIES.items():
        assert duty in groups[queue] and set(groups[queue]) <= {duty, "operator"}, (queue, groups[queue])
    assert set(groups["monitor"]) == {"reader", "operator"}
    assert {duty for duties in groups.values() for duty in duties} == set(DUTIES)
