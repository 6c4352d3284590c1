"""A worker refuses to start against a catalogue schema older than its code.

Checked once, in the worker's main process, before it consumes anything (celery_app.py hooks ``celeryd_init``).
The rule, for a rolling upgrade that migrates the database first (playbooks/upgrade.yml, docs/deploy.md):

- the database is at this release's head: start;
- the database is at a revision this release knows that is not its head (an ancestor: the schema is older than
  the code), or has no revision at all: refuse. The code would write columns and tables that do not exist yet,
  and every statement of every unit would fail. One line in the log says what to do, and the process exits
  with ``EXIT_SCHEMA_BEHIND``, the one exit code the supervisor role's programs are not restarted after (FATAL
  when it comes before ``startsecs``, EXITED on a host so slow that it comes later);
- the database is at a revision this release does not know: a newer release migrated it first, which is the
  point of migrating first. Migrations are additive within a release (docs/deploy.md: add, then remove in a
  later release), so the old code still works on it: start, with a warning;
- the database cannot be reached: start, with a warning. The tasks retry while the database is away, and a
  worker that refused to start would stay FATAL after the database came back.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from worker_app.db.duty import database_url

# sysexits.h EX_CONFIG: the worker is not usable with this catalogue until someone runs the migrations.
EXIT_SCHEMA_BEHIND = 78
VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"

# Read from the migration files without importing Alembic: importing it costs seconds on a busy host, and a
# refusing worker must exit within supervisor's startsecs. tests/faults/test_upgrade.py checks that this reading
# agrees with Alembic's.
_REVISION = re.compile(r"""^revision\s*(?::[^=]+)?=\s*["']([^"']+)["']""", re.M)
_DOWN_REVISION = re.compile(r"""^down_revision\s*(?::[^=]+)?=\s*(None|["']([^"']+)["'])""", re.M)


@dataclass(frozen=True)
class Verdict:
    start: bool
    message: str
    database: tuple[str, ...] = ()
    code: str | None = None


def code_revisions(versions: Path = VERSIONS) -> tuple[str, frozenset[str]]:
    """(head, every revision) of the migrations this release ships (a linear chain)."""
    parents: dict[str, str | None] = {}
    for path in versions.glob("*.py"):
        source = path.read_text()
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision and down:
            parents[revision.group(1)] = down.group(2)
    heads = set(parents) - set(parents.values())
    if len(heads) != 1:
        raise RuntimeError(f"the migrations under {versions} have {len(heads)} heads: {sorted(heads)}")
    return heads.pop(), frozenset(parents)


def _database_revisions(database_url: str) -> tuple[str, ...]:
    engine = create_engine(database_url, poolclass=NullPool, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as connection:
            if connection.execute(text("SELECT to_regclass('alembic_version')")).scalar() is None:
                return ()
            return tuple(sorted(connection.execute(text("SELECT version_num FROM alembic_version")).scalars()))
    finally:
        engine.dispose()


def judge(database: tuple[str, ...], code: str, known: frozenset[str]) -> Verdict:
    """What a worker whose migrations end at ``code`` (and know ``known``) does with a catalogue at ``database``."""
    if database == (code,):
        return Verdict(True, f"catalogue schema at {code}, as this release needs", database, code)
    shown = ", ".join(database) or "none (never migrated)"
    upgrade = f"catalogue schema is at {shown}, this release needs {code}: run `soniquebay db upgrade`"
    if not database or any(revision in known for revision in database):
        # No schema, or one this release knows that is not its head: an ancestor, older than the code.
        return Verdict(False, upgrade, database, code)
    return Verdict(True, f"catalogue schema is at {shown}, newer than this release ({code}): a newer release "
                         f"migrated it; starting, since migrations only add within a release", database, code)


def check() -> Verdict:
    code, known = code_revisions()
    try:
        database = _database_revisions(database_url())
    except Exception as error:  # noqa: BLE001 - any failure to reach the database
        first_line = (str(getattr(error, "orig", None) or error).strip().splitlines() or [""])[0]
        return Verdict(True, f"cannot read the catalogue's schema revision ({type(error).__name__}: {first_line}); "
                             f"starting anyway, the tasks retry while the database is away", (), code)
    return judge(database, code, known)


def refuse_to_start_on_an_older_schema() -> None:
    """Exit the process when the catalogue is older than the code; say so when it is newer or unreadable."""
    verdict = check()
    if verdict.start:
        if verdict.database != (verdict.code,):
            _say("WARNING", verdict.message)
        return
    _say("CRITICAL", f"worker not started: {verdict.message}")
    # At once: nothing was started that needs closing, and a slow interpreter exit could outlast startsecs.
    os._exit(EXIT_SCHEMA_BEHIND)


def _say(level: str, message: str) -> None:
    """Straight to standard error (supervisor's log of the program): Celery's logging is not set up yet."""
    print(f"[{level}/schema_check] {message}", file=sys.stderr, flush=True)
