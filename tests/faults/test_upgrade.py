"""A schema migration during a rolling upgrade.

On a stack of its own (its schema is taken down and up, and migrated past this release's head):

- a worker whose code is newer than the catalogue's schema does not start: one line in its log says what to do,
  supervisor shows it FATAL; after `soniquebay db upgrade` it starts;
- the next release's migrations run while a scan is in flight on the current release's workers (the order
  playbooks/upgrade.yml uses: migrate first, then roll the code), with a long transaction holding a lock the
  migration's ALTER needs: the migration gives up its place in the lock queue after the lock timeout and retries,
  so the workers' queries on that table are never held up much longer than the lock timeout; the scan completes
  with every track; a worker of the current release restarted on the newer schema starts;
- `create_index_concurrently` lets writers go on while it waits for a long transaction, and every migration
  under versions/ builds its indexes on existing tables with it.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from tests.audio_factory import make_library
from tests.services import REPO, VENV_BIN, Stack, Supervisor, wait_for
from tests.supervisor_role import defaults as role_defaults
from worker_app.db.migrate import MIGRATION_LOCK_KEY
from worker_app.db.schema_check import EXIT_SCHEMA_BEHIND
from worker_app.limits import QUEUES
from worker_app.paths import db_path

pytestmark = pytest.mark.timeout(900)

VERSIONS = REPO / "worker_app" / "migrations" / "versions"
# Shrunk from 5 s, so that the long transaction below outlasts several lock timeouts within seconds.
LOCK_TIMEOUT = 1
N_FILES = 3000
PROGRAMS = QUEUES  # one supervisor program per queue
RETRY_LINE = re.compile(r"migration retry \d+ of \d+")

# Written before the rule (worker_app/migrations/helpers.py) existed. Both build a partial index on scan_units, an
# existing table, with a plain CREATE INDEX: the workers' writes to scan_units wait for the build. 0002 is released;
# 0003 (on main, written alongside the rule) should use create_index_concurrently before it is released, and
# leave this list. Nothing else may join it.
BEFORE_THE_RULE = {"0002_scan_unit_outbox.py"}


# ---------------------------------------------------------------------------------------------- the rule, statically

def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == name
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "op"]


def _upgrade_function(tree: ast.Module) -> ast.FunctionDef | None:
    return next((node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "upgrade"), None)


def _index_on_existing_tables(source: str) -> list[str]:
    """The op.create_index calls of a migration's upgrade() whose table that same upgrade() does not create."""
    upgrade = _upgrade_function(ast.parse(source))
    if upgrade is None:
        return []
    created = {call.args[0].value for call in _calls(upgrade, "create_table")
               if call.args and isinstance(call.args[0], ast.Constant)}
    offending = []
    for call in _calls(upgrade, "create_index"):
        table = call.args[1] if len(call.args) > 1 else next(
            (kw.value for kw in call.keywords if kw.arg == "table_name"), None)
        table_name = table.value if isinstance(table, ast.Constant) else None
        concurrently = any(kw.arg == "postgresql_concurrently" for kw in call.keywords)
        if table_name not in created and not concurrently:
            offending.append(f"line {call.lineno}: op.create_index on {table_name or '?'}")
    return offending


def test_migrations_build_indexes_on_existing_tables_concurrently():
    found = {path.name: _index_on_existing_tables(path.read_text()) for path in sorted(VERSIONS.glob("*.py"))}
    assert "0001_catalogue_and_scan_records.py" in found  # the check does look at the chain
    offending = {name: calls for name, calls in found.items() if calls and name not in BEFORE_THE_RULE}
    assert offending == {}, (
        "build indexes on existing tables with worker_app.migrations.helpers.create_index_concurrently: "
        f"{offending}")
    # The check itself sees a plain index on an existing table, and lets the helper and new tables through.
    assert _index_on_existing_tables(textwrap.dedent("""
        def upgrade():
            op.create_table("fresh", sa.Column("id", sa.Integer))
            op.create_index("ix_fresh", "fresh", ["id"])
            op.create_index("ix_tracks_x", "tracks", ["x"])
            create_index_concurrently("ix_tracks_y", "tracks", ["y"])
    """)) == ["line 5: op.create_index on tracks"]


def test_the_start_check_reads_the_chain_as_alembic_does():
    from alembic.script import ScriptDirectory

    from worker_app.db.migrate import alembic_config
    from worker_app.db.schema_check import code_revisions

    script = ScriptDirectory.from_config(alembic_config())
    assert code_revisions() == (script.get_current_head(),
                                frozenset(revision.revision for revision in script.walk_revisions()))


# ------------------------------------------------------------------------------------------------- the stack

@pytest.fixture(scope="module")
def upgrade_stack(workspace):
    root = workspace / "upgrade-library"
    root.mkdir()
    stack = Stack(workspace / "upgrade-services", [root], extra_env={
        "SONIQUEBAY_BATCH_SIZE": "20",
        "SONIQUEBAY_MIGRATION_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
    })
    stack.start_services()
    try:
        stack.soniquebay("db", "upgrade")
        yield stack, root
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def next_release(tmp_path_factory):
    """The migrations of a next release: this release's chain plus u0003 (a column and an index on tracks, a big
    table the workers write to all the time) and u0004 (an index on a scratch table of the tests)."""
    folder = tmp_path_factory.mktemp("next-release") / "migrations"
    shutil.copytree(REPO / "worker_app" / "migrations", folder, ignore=shutil.ignore_patterns("__pycache__"))
    head = subprocess.run([sys.executable, "-c", "from worker_app.db.migrate import head_revision; "
                           "print(head_revision())"], capture_output=True, text=True, check=True,
                          cwd=REPO).stdout.strip()
    (folder / "versions" / "u0003_track_note.py").write_text(textwrap.dedent(f'''\
        """tracks get a note (a test's migration: additive, so the previous release works on it)

        Revision ID: u0003
        Revises: {head}
        """
        import sqlalchemy as sa
        from alembic import op

        from worker_app.migrations.helpers import create_index_concurrently, drop_index_concurrently

        revision = "u0003"
        down_revision = "{head}"
        branch_labels = None
        depends_on = None


        def upgrade() -> None:
            op.add_column("tracks", sa.Column("upgrade_note", sa.Text(), nullable=True))
            create_index_concurrently("ix_tracks_upgrade_note", "tracks", ["upgrade_note"])


        def downgrade() -> None:
            drop_index_concurrently("ix_tracks_upgrade_note", "tracks")
            op.drop_column("tracks", "upgrade_note")
    '''))
    (folder / "versions" / "u0004_probe_index.py").write_text(textwrap.dedent('''\
        """an index on the tests' scratch table

        Revision ID: u0004
        Revises: u0003
        """
        from worker_app.migrations.helpers import create_index_concurrently, drop_index_concurrently

        revision = "u0004"
        down_revision = "u0003"
        branch_labels = None
        depends_on = None


        def upgrade() -> None:
            create_index_concurrently("ix_upgrade_probe_v", "upgrade_probe", ["v"])


        def downgrade() -> None:
            drop_index_concurrently("ix_upgrade_probe_v", "upgrade_probe")
    '''))
    return folder, head


def _migrate(stack: Stack, revision: str, script_location: Path, **env: str) -> subprocess.Popen:
    """`soniquebay db upgrade` of another release: the same code path, another script directory."""
    program = ("import logging, sys\n"
               "logging.basicConfig(level=logging.INFO, stream=sys.stderr, "
               "format='%(asctime)s %(levelname)s %(name)s: %(message)s')\n"
               "from worker_app.db.migrate import upgrade\n"
               "print(upgrade(sys.argv[1], sys.argv[2]))\n")
    return subprocess.Popen([sys.executable, "-c", program, revision, str(script_location)],
                            env={**stack.cli_env(), **env}, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _start_supervisor(stack: Stack) -> Supervisor:
    """supervisord with every worker program, without waiting for them to be RUNNING (they may never be)."""
    # With the role's start settings (startsecs, startretries): whether a refusing worker ends FATAL depends on them.
    start_settings = {name: value for name, value in role_defaults().items()
                      if name.startswith("supervisor_worker_start")}
    supervisor = Supervisor(stack.base / "supervisor", stack.env_file, role_vars=start_settings)
    supervisor.base.mkdir(parents=True, exist_ok=True)
    supervisor.write_config()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SONIQUEBAY_")}
    subprocess.run(["supervisord", "-c", str(supervisor.config)], check=True, env=env)
    stack.supervisor = supervisor
    return supervisor


# The states of a program supervisor will not start again by itself.
STOPPED_FOR_GOOD = ("FATAL", "EXITED")


def _states(supervisor: Supervisor) -> dict[str, str]:
    """{program: state}: a worker's status line names its group first (soniquebay-QUEUE:soniquebay-QUEUE-cN)."""
    return {line.split()[0].split(":")[0]: line.split()[1]
            for line in supervisor.ctl("status", check=False).splitlines() if line.strip()}


# ------------------------------------------------------------------------------- a worker on an older schema

def test_a_worker_refuses_to_start_on_an_older_schema(upgrade_stack):
    stack, _ = upgrade_stack
    head = json.loads(stack.soniquebay("db", "current").stdout)["head"]
    stack.soniquebay("db", "downgrade", "-1")  # the newest migration's downgrade works
    older = json.loads(stack.soniquebay("db", "current").stdout)["current"]
    assert older not in (None, head)

    supervisor = _start_supervisor(stack)
    programs = [f"soniquebay-{name}" for name in PROGRAMS]
    try:
        # supervisord tries startretries more times, then gives up: FATAL.
        # FATAL when the refusal came before startsecs, EXITED on a host so loaded that it came later: either
        # way supervisor does not start it again (the role's exitcodes).
        wait_for(lambda: all(_states(supervisor).get(p) in STOPPED_FOR_GOOD for p in programs), 240,
                 "every worker program FATAL or EXITED", interval=0.5)
    except TimeoutError as error:
        raise AssertionError(stack.diagnostics()) from error
    status = supervisor.ctl("status", check=False)
    line = f"catalogue schema is at {older}, this release needs {head}: run `soniquebay db upgrade`"
    for name in PROGRAMS:
        assert re.search(rf"^soniquebay-{name}:\S+\s+(FATAL|EXITED)\s", status, re.M), status
        log = supervisor.log(name).read_text(errors="replace")
        assert line in log, log
        assert " ready." not in log, f"{name} consumed before refusing: {log}"  # Celery's "celery@host ready."

    # It refused with its own exit code (78, EX_CONFIG), not a crash, and that is the exit code the role's programs
    # are not restarted after.
    assert f"exitcodes={EXIT_SCHEMA_BEHIND}\n" in supervisor.config.read_text()
    supervisord_log = (supervisor.base / "supervisord.log").read_text()
    assert re.search(rf"exited: soniquebay-insert-c\d+ \(exit status {EXIT_SCHEMA_BEHIND}; (not )?expected\)",
                     supervisord_log), supervisord_log
    time.sleep(5)  # not started again meanwhile
    assert all(_states(supervisor)[p] in STOPPED_FOR_GOOD for p in programs), supervisor.ctl("status")

    upgraded = stack.soniquebay("db", "upgrade")
    assert f"catalogue at revision {head}" in upgraded.stdout
    supervisor.ctl("start", "all")
    wait_for(supervisor.all_running, 90, "every worker program RUNNING after the upgrade")
    for name in PROGRAMS:
        # RUNNING for supervisor means up for startsecs: Celery itself says when it consumes.
        log = supervisor.log(name)
        wait_for(lambda log=log: " ready." in log.read_text(errors="replace"), 60, f"{name} ready")


# ----------------------------------------------------------------- the next release migrates during a scan

class LatencyProbe(threading.Thread):
    """What a worker sees meanwhile: a query on ``table`` every 50 ms, each one's duration recorded."""

    def __init__(self, url: str, statement: str):
        super().__init__(daemon=True)
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT")
        self.statement = text(statement)
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        with self.engine.connect() as connection:
            while not self.done.is_set():
                started = time.monotonic()
                try:
                    connection.execute(self.statement)
                except Exception as error:  # noqa: BLE001 - recorded, asserted on
                    self.errors.append(str(error).splitlines()[0])
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.05)

    def stop(self) -> None:
        self.done.set()
        self.join(30)
        self.engine.dispose()


def _ensure_workers(stack: Stack) -> Supervisor:
    if stack.supervisor is None:
        stack.start_workers()
    elif not stack.supervisor.all_running():
        stack.supervisor.ctl("start", "all")
        wait_for(stack.supervisor.all_running, 90, "every worker program RUNNING")
    return stack.supervisor


def test_a_scan_completes_while_the_next_release_migrates(upgrade_stack, next_release):
    stack, root = upgrade_stack
    scripts, head = next_release
    stack.soniquebay("db", "upgrade")  # this release's head, whatever ran before
    supervisor = _ensure_workers(stack)
    library = make_library(root / "music", n_files=N_FILES, seed=41)
    expected = {db_path(path)[0] for path in library.by_path}
    prefix = os.fsdecode(library.root) + "/"
    engine = create_engine(stack.postgres.url)

    started = time.monotonic()
    scan = subprocess.Popen(
        [str(VENV_BIN / "soniquebay"), "scan", str(library.root), "--wait", "--json", "--timeout", "600"],
        env=stack.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )

    def catalogued() -> int:
        with Session(engine) as session:
            return session.execute(text("SELECT count(*) FROM tracks WHERE path LIKE :p"), {"p": prefix + "%"}
                                   ).scalar()

    try:
        wait_for(lambda: catalogued() >= N_FILES // 50, 300, "the first tracks inserted", interval=0.2)
    except TimeoutError as error:
        raise AssertionError(stack.diagnostics()) from error

    # A long reader on tracks (a report, a pg_dump): its ACCESS SHARE lock blocks the ALTER TABLE for 5 lock
    # timeouts once the ALTER is queued. Without a lock timeout the ALTER would wait that long at the head of the
    # queue, and every worker query on tracks would wait behind it (this test then fails on the probe).
    hold = 5 * LOCK_TIMEOUT
    probe = LatencyProbe(stack.postgres.url, "SELECT count(*) FROM tracks")
    with engine.connect() as blocker, engine.connect() as watcher:
        blocker.execute(text("SELECT count(*) FROM tracks"))
        probe.start()
        migration = _migrate(stack, "u0003", scripts)

        def alter_queued() -> bool:
            watcher.rollback()  # a fresh snapshot of pg_stat_activity each time
            return bool(watcher.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query ILIKE 'ALTER TABLE tracks%'")).scalar())

        wait_for(alter_queued, 60, "the migration's ALTER TABLE queued behind the reader", interval=0.02)
        time.sleep(hold)
        blocker.rollback()
    migrated_out, migrated_err = migration.communicate(timeout=300)
    probe.stop()
    migration_seconds = time.monotonic() - started
    in_flight = catalogued()

    assert migration.returncode == 0, migrated_err
    # Nobody waited behind the migration much longer than the lock timeout.
    assert probe.errors == []
    assert len(probe.latencies) >= 5, "the probe hardly ran"
    assert max(probe.latencies) < 3 * LOCK_TIMEOUT, (max(probe.latencies), migrated_err)
    retries = int(migrated_out.strip().splitlines()[-1])
    retry_lines = RETRY_LINE.findall(migrated_err)
    assert retries >= 1 and len(retry_lines) == retries, migrated_err
    assert "canceling statement due to lock timeout" in migrated_err

    out, err = scan.communicate(timeout=600)
    assert scan.returncode == 0, err + out + stack.diagnostics()
    summary = json.loads(out)
    assert summary["status"] == "complete", summary
    # The migration ran across the scan: the scan went on inserting after it.
    assert in_flight < len(expected), f"the scan was over ({in_flight} tracks) before the migration ended"
    assert summary["inserted"] == len(expected) and summary["failed"] == len(library.corrupt), summary
    with Session(engine) as session:
        rows = session.execute(text("SELECT path FROM tracks WHERE path LIKE :p"), {"p": prefix + "%"}
                               ).scalars().all()
        revision = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
        index_valid = session.execute(text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = 'ix_tracks_upgrade_note'")).scalar()
    assert len(rows) == len(set(rows)) and set(rows) == expected
    assert revision == "u0003" and index_valid is True

    # A worker of this release restarted on the newer schema (the rest of a rolling upgrade) starts, and says so.
    log = supervisor.log("insert")
    before = log.stat().st_size
    supervisor.ctl("restart", supervisor.group("insert"))
    wait_for(supervisor.all_running, 60, "the restarted insert worker RUNNING")
    wait_for(lambda: " ready." in log.read_text(errors="replace")[before:], 60, "the insert worker ready")
    assert f"catalogue schema is at u0003, newer than this release ({head})" in log.read_text(errors="replace")[before:]
    print(f"\nmigration during the scan: {retries} retries, probe max {max(probe.latencies):.2f} s "
          f"over {len(probe.latencies)} queries, lock timeout {LOCK_TIMEOUT} s; scan of {len(expected)} tracks "
          f"{summary.get('seconds')} s, {migration_seconds:.1f} s from its start to the end of the migration, "
          f"{in_flight} tracks in by then")


# ------------------------------------------------------------------------ an index built without blocking writes

def test_an_index_built_concurrently_lets_writers_through(upgrade_stack, next_release):
    stack, _ = upgrade_stack
    scripts, _ = next_release
    lock_timeout = 2
    engine = create_engine(stack.postgres.url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS upgrade_probe (id bigserial PRIMARY KEY, v integer)"))
        connection.execute(text("INSERT INTO upgrade_probe (v) SELECT g % 1000 FROM generate_series(1, 200000) g"))
    # u0003 first (it may already be there), so that only u0004 meets the writer below.
    first = _migrate(stack, "u0003", scripts)
    assert first.wait(300) == 0, first.stderr.read()

    probe = LatencyProbe(stack.postgres.url, "INSERT INTO upgrade_probe (v) VALUES (1)")
    with engine.connect() as writer:
        # A writer in a long transaction: CREATE INDEX, concurrently or not, waits for it. A plain one would hold
        # its SHARE lock while it waits, and every other INSERT would wait behind it.
        writer.execute(text("INSERT INTO upgrade_probe (v) VALUES (2)"))
        probe.start()
        migration = _migrate(stack, "u0004", scripts, SONIQUEBAY_MIGRATION_LOCK_TIMEOUT=str(lock_timeout))
        time.sleep(2.5 * lock_timeout)
        writer.commit()
    out, err = migration.communicate(timeout=300)
    probe.stop()
    assert migration.returncode == 0, err
    assert int(out.strip().splitlines()[-1]) >= 1, err  # it did wait for the writer, and retried
    assert probe.errors == [] and len(probe.latencies) >= 10
    assert max(probe.latencies) < lock_timeout / 2, (max(probe.latencies), err)
    with engine.connect() as connection:
        valid = connection.execute(text(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'upgrade_probe'::regclass AND c.relname <> 'upgrade_probe_pkey'")).all()
    assert valid == [("ix_upgrade_probe_v", True)]  # the failed attempts' invalid index was dropped


# ------------------------------------------------------------------------------------- the start rule, case by case

@pytest.mark.parametrize(("database", "starts"), [
    (("0002",), True),           # this release's head
    (("0001",), False),          # older: an ancestor of the head
    ((), False),                 # never migrated
    (("u0003",), True),          # unknown: a newer release migrated first
    (("0001", "u0003"), False),  # branches, one of them older than the code
])
def test_the_start_rule(database, starts):
    from worker_app.db.schema_check import judge

    verdict = judge(database, "0002", frozenset({"0001", "0002"}))
    assert verdict.start is starts, verdict
    if not starts:
        assert verdict.message.endswith("this release needs 0002: run `soniquebay db upgrade`")


# ------------------------------------------------------------------------------ two upgrades, and one that gives up

def test_a_second_upgrade_waits_for_the_first_and_a_stuck_one_gives_up(upgrade_stack, next_release):
    stack, _ = upgrade_stack
    scripts, _ = next_release
    engine = create_engine(stack.postgres.url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS upgrade_probe (id bigserial PRIMARY KEY, v integer)"))
    first = _migrate(stack, "u0003", scripts)  # whatever the tests before left, u0003 from here on
    assert first.wait(300) == 0, first.stderr.read()

    with engine.connect() as other_upgrade:
        other_upgrade.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        waiting = _migrate(stack, "u0004", scripts)
        time.sleep(3 * LOCK_TIMEOUT)
        assert waiting.poll() is None, waiting.communicate()  # it waits, whatever the lock timeout
        other_upgrade.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        other_upgrade.commit()
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0 and "another `soniquebay db upgrade` is running: waiting" in err, err

    # A downgrade to u0003, then an upgrade that never gets its lock: it gives up after its attempts, non-zero.
    down = subprocess.run([sys.executable, "-c", "import sys; from worker_app.db.migrate import downgrade; "
                           "downgrade(sys.argv[1], sys.argv[2])", "u0003", str(scripts)],
                          env=stack.cli_env(), cwd=REPO, capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    with engine.connect() as reader:
        reader.execute(text("LOCK TABLE upgrade_probe IN SHARE ROW EXCLUSIVE MODE"))  # blocks CREATE INDEX
        stuck = _migrate(stack, "u0004", scripts, SONIQUEBAY_MIGRATION_ATTEMPTS="2")
        out, err = stuck.communicate(timeout=300)
        reader.rollback()
    assert stuck.returncode != 0
    assert len(RETRY_LINE.findall(err)) == 1 and "migration gave up after 2 attempts" in err, err
