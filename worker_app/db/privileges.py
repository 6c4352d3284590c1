"""The catalogue's database roles by duty, and the one place that says what each may do to each table.

The owner of the database (``postgresql_app_user``, ``SONIQUEBAY_DATABASE_URL``) runs the migrations and nothing
else: it may DROP, ALTER and TRUNCATE. Every other process connects as the login role of its duty, named
``<owner>_<duty>`` (created by the Ansible postgresql role, with their passwords from the vault):

- ``ledger``: the scan, extract and batch workers. They read the catalogue (which files are known, at which size
  and mtime) and write only the scan's bookkeeping: its units, failure records, listed folders, its figures and
  status, the audio features the extract workers measure, and the claim checks of their units (the records and
  pictures staged for the insert). They cannot write a track, an album, an artist or a cover, and cannot delete
  any row but a failure record of a file that came back and a unit's claim check.
- ``catalogue``: the insert and deferred workers. The ledger's rights, plus writing and deleting the catalogue's
  rows (upserts, removals, orphans, covers, search and similarity vectors), pruning old scans' records and
  moving the analysis backlog's drain on.
- ``operator``: starting and cancelling scans (``soniquebay scan``, ``cancel``), the scheduler of rescans, and
  staging the pictures of ``soniquebay db load`` (whose insert workers write the rows).
- ``reader``: the command line's read commands and the Prometheus exporter: SELECT only.

No duty may create, alter, drop or truncate anything (those rights belong to the owner alone, and PostgreSQL
grants them to no one else), nor delete what the map below does not give it.

``grant`` applies the map as the owner, at the end of every ``soniquebay db upgrade`` (and by ``soniquebay db
grant``): a table the migrations create that the map does not name makes the upgrade fail, so none is forgotten.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, text

log = logging.getLogger("worker_app.privileges")

DUTIES = ("ledger", "catalogue", "operator", "reader")

# Which duty a worker consuming each queue connects with; a worker consuming several takes the duty that covers
# them all (duty_for_queues).
QUEUE_DUTIES = {"scan": "ledger", "extract": "ledger", "batch": "ledger", "insert": "catalogue",
                "deferred": "catalogue"}

SELECT = ("SELECT",)
WRITE = ("INSERT", "UPDATE")
WRITE_DELETE = ("INSERT", "UPDATE", "DELETE")

# The scan's figures and state, which the workers of every stage move on. Not its root (which folder the
# end-of-scan sweep looks under) nor its id.
SCAN_PROGRESS = ("status", "started_at", "finished_at", "error", "discovered", "unchanged", "extracted",
                 "inserted", "failed", "removed")


def _update(columns: Iterable[str]) -> str:
    return f"UPDATE ({', '.join(columns)})"


# table -> duty -> privileges beyond SELECT, which every duty has on every table: reading the catalogue is not
# what an intruder on a worker host should be stopped from (the library it catalogues is on that host anyway);
# writing it is. "UPDATE (a, b)" limits an UPDATE to those columns.
_WRITES: dict[str, dict[str, tuple[str, ...]]] = {
    # The catalogue: only its writers.
    "artists": {"catalogue": WRITE_DELETE},
    "albums": {"catalogue": WRITE_DELETE},
    "covers": {"catalogue": WRITE_DELETE},
    "tracks": {"catalogue": WRITE_DELETE},
    "track_artists": {"catalogue": WRITE_DELETE},
    # Filled by triggers on the catalogue's tables (they run as the writer), emptied by the orphan sweep.
    "orphan_candidates": {"catalogue": ("INSERT", "DELETE")},
    # Measured by the extract workers (extract_audio_features_batch), deleted with their track (a cascade, which
    # runs as the owner).
    "audio_features": {"ledger": WRITE, "catalogue": WRITE},
    "track_vectors": {"catalogue": WRITE_DELETE},
    "album_audio": {"catalogue": WRITE_DELETE},
    # The ledger.
    "scans": {"ledger": (_update(SCAN_PROGRESS),),
              "catalogue": (_update((*SCAN_PROGRESS, "after_scan_id", "pruned_at")),),
              "operator": ("INSERT", _update((*SCAN_PROGRESS, "after_scan_id")))},
    "scan_units": {"ledger": WRITE, "catalogue": WRITE_DELETE, "operator": ("UPDATE",)},
    "scan_folders": {"ledger": ("INSERT",), "catalogue": ("INSERT", "DELETE")},
    "scan_failures": {"ledger": WRITE, "catalogue": WRITE_DELETE},
    # A failure remembered for a file's (size, mtime); the scan forgets one whose file is gone, the insert one
    # whose file now reads.
    "failed_files": {"ledger": WRITE_DELETE, "catalogue": WRITE_DELETE},
    "broker_epochs": {"catalogue": ("INSERT",)},
    # The claim check (pipeline/staging.py): the extract stage writes a unit's records (again on a redelivery),
    # the batch stage its payload, and a unit closed as failed at any stage drops its row; the insert stage locks
    # the row (SELECT ... FOR UPDATE needs UPDATE), reads it and drops it, and retention (deferred) drops those of
    # ended scans.
    "staged_units": {"ledger": WRITE_DELETE, "catalogue": WRITE_DELETE},
    # A picture staged once by sha256: the extract stage adds it or touches its staged_at; the insert stage moves
    # it into covers (INSERT ... SELECT: read here) and drops it, retention drops those no unit uses. `soniquebay
    # db load` (the operator) stages its records' pictures the same way, so that its messages carry only their
    # sha256, and drops at its end the staged copies the catalogue has (a unit staging the same picture finds it
    # there): it changes no other column and writes no catalogue row itself.
    "staged_covers": {"ledger": ("INSERT", _update(("staged_at",))),
                      "catalogue": ("INSERT", _update(("staged_at",)), "DELETE"),
                      "operator": ("INSERT", _update(("staged_at",)), "DELETE")},
    # The analysis backlog's drain (deferred) moves its cursor on.
    "backlog_cursors": {"catalogue": WRITE},
    "scan_schedules": {"operator": WRITE},
    "scan_schedule_runs": {"operator": WRITE},
    "alembic_version": {},
}

PRIVILEGES: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    table: {duty: ("SELECT", *writes.get(duty, ())) for duty in DUTIES} for table, writes in _WRITES.items()
}


def role_name(owner: str, duty: str) -> str:
    return f"{owner}_{duty}"


def _privilege_set(privileges: Iterable[str], columns: Iterable[str]) -> set[tuple[str, str | None]]:
    """(privilege, column or None for the whole table): "UPDATE (a, b)" becomes ("UPDATE", "a"), ("UPDATE", "b")."""
    out: set[tuple[str, str | None]] = set()
    all_columns = tuple(columns)
    for privilege in privileges:
        name, _, rest = privilege.partition(" ")
        if rest:
            out.update((name, column.strip()) for column in rest.strip("()").split(","))
        else:
            out.add((name, None))
            out.update((name, column) for column in all_columns)
    return out


def covers(duty: str, other: str, columns: Mapping[str, Iterable[str]]) -> bool:
    """Whether ``duty`` may do everything ``other`` may (``columns``: each table's columns)."""
    return all(
        _privilege_set(PRIVILEGES[table][other], columns[table]) <= _privilege_set(PRIVILEGES[table][duty],
                                                                                   columns[table])
        for table in PRIVILEGES
    )


def table_columns() -> dict[str, list[str]]:
    """Each table's columns, from the models (and alembic_version's one)."""
    from worker_app.db.models import Base

    columns = {name: [column.name for column in table.columns] for name, table in Base.metadata.tables.items()}
    columns["alembic_version"] = ["version_num"]
    return columns


# The workers' duties, each covering the ones before it (tests/test_db_roles.py checks it against the map).
WORKER_DUTIES = ("ledger", "catalogue")


def duty_for_queues(queues: Iterable[str]) -> str:
    """The duty of a worker consuming ``queues`` (every queue when none is named): the least one that covers the
    duty of each. Known without importing the models: a worker that refuses to start must exit within
    supervisor's startsecs."""
    return max((QUEUE_DUTIES[queue] for queue in (list(queues) or QUEUE_DUTIES)), key=WORKER_DUTIES.index)


def missing_tables(connection: Connection) -> list[str]:
    """Tables of the schema the map does not name."""
    names = connection.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")).scalars()
    return [name for name in names if name not in PRIVILEGES]


class UnmappedTable(Exception):
    pass


@dataclass(frozen=True)
class Granted:
    granted: list[str]  # the roles given their duty's privileges
    missing_roles: list[str]  # duties' roles that do not exist (not granted)
    changed: bool  # whether any privilege changed


def _acl_snapshot(connection: Connection) -> list[tuple[str, str, str]]:
    return [tuple(row) for row in connection.execute(text(
        "SELECT c.relname, coalesce(c.relacl::text, ''), coalesce(string_agg(a.attname || '=' || a.attacl::text, "
        "',' ORDER BY a.attname), '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attacl IS NOT NULL "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'S', 'p') GROUP BY c.relname, c.relacl::text "
        "ORDER BY c.relname"))]


def grant(connection: Connection) -> Granted:
    """Give each duty's login role exactly its privileges on every table (and the sequences of the tables it
    inserts into), taking away anything else it had. Runs as the owner, in the caller's transaction. Duties whose
    role does not exist are skipped (and named)."""
    unmapped = missing_tables(connection)
    if unmapped:
        raise UnmappedTable(
            f"tables with no privileges in worker_app/db/privileges.py: {', '.join(unmapped)}; say there what each "
            f"duty may do to them")
    owner = connection.execute(text("SELECT current_user")).scalar_one()
    database = connection.execute(text("SELECT current_database()")).scalar_one()
    existing = set(connection.execute(text("SELECT rolname FROM pg_roles")).scalars())
    tables = set(connection.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars())
    before = _acl_snapshot(connection)
    granted, missing = [], []
    for duty in DUTIES:
        role = role_name(owner, duty)
        if role not in existing:
            missing.append(role)
            continue
        quoted = _quote(connection, role)
        connection.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO {quoted}'))
        connection.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted}"))
        connection.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {quoted}"))
        for table in sorted(tables):
            privileges = PRIVILEGES[table][duty]
            connection.execute(text(f"GRANT {', '.join(privileges)} ON {_quote(connection, table)} TO {quoted}"))
            if "INSERT" in privileges:
                for sequence in connection.execute(text(
                        "SELECT s.relname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid "
                        "JOIN pg_class t ON t.oid = d.refobjid WHERE s.relkind = 'S' AND t.relname = :table "
                        "AND t.relnamespace = to_regnamespace(current_schema())"), {"table": table}).scalars():
                    connection.execute(text(f"GRANT USAGE ON SEQUENCE {_quote(connection, sequence)} TO {quoted}"))
        granted.append(role)
    if missing:
        log.warning("no role %s: those duties were not granted (the postgresql role creates them)",
                    ", ".join(missing))
    return Granted(granted, missing, _acl_snapshot(connection) != before)


def _quote(connection: Connection, name: str) -> str:
    return str(connection.execute(text("SELECT quote_ident(:name)"), {"name": name}).scalar_one())
