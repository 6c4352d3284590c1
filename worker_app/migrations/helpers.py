"""Helpers for migrations that run while the fleet works.

THE RULE: an index on a table that already exists (and so may hold millions of rows that workers are writing)
is built with ``create_index_concurrently``, never ``op.create_index``. A plain CREATE INDEX holds a SHARE lock on
the table for the whole build: every INSERT, UPDATE and DELETE of the workers waits for it, for minutes on a large
catalogue. ``op.create_index`` stays right for a table created in the same migration (it is empty).
tests/faults/test_upgrade.py checks every migration under versions/ against this rule.

A concurrent build cannot run inside a transaction: the helper commits the migration's transaction so far (which
is why migrations run one transaction each, see env.py), builds the index in autocommit, and the migration goes on
in a new transaction. A build that failed (the lock timeout, a duplicate in a unique index) leaves an INVALID index
behind; the next attempt drops it and builds it again, so `soniquebay db upgrade` can simply be run again.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic import op
from sqlalchemy import text


def _invalid_index_exists(name: str) -> bool:
    return bool(op.get_bind().execute(
        text("SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
             "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"),
        {"name": name},
    ).scalar())


def create_index_concurrently(index_name: str, table_name: str, columns: Sequence[str], **kw: Any) -> None:
    """``op.create_index`` without blocking writes to ``table_name`` (``CREATE INDEX CONCURRENTLY IF NOT EXISTS``);
    keyword arguments as for ``op.create_index`` (``unique``, ``postgresql_where``, ``postgresql_using``...)."""
    with op.get_context().autocommit_block():
        if _invalid_index_exists(index_name):
            op.drop_index(index_name, table_name=table_name, postgresql_concurrently=True, if_exists=True)
        op.create_index(index_name, table_name, list(columns), postgresql_concurrently=True, if_not_exists=True,
                        **kw)


def drop_index_concurrently(index_name: str, table_name: str) -> None:
    """``op.drop_index`` without blocking the table's readers and writers while it waits (downgrades)."""
    with op.get_context().autocommit_block():
        op.drop_index(index_name, table_name=table_name, postgresql_concurrently=True, if_exists=True)
