"""The fleet's secrets stay where they are meant to be: the test stack's passwords (chosen at random when the
session starts, tests/services.py) must not appear in the repository, in any file the services and workers wrote
while a scan ran (their configuration, logs, data), or in the command line of any process on the host."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audio_factory import make_library
from tests.services import REPO

pytestmark = pytest.mark.timeout(600)


# Every command line this test process starts while RECORDING: the tests' own tools (redis-cli, psql) run for a
# moment only, too short for a look at /proc to catch, but as visible in `ps` meanwhile.
STARTED: list[bytes] = []
RECORDING = []


def _record(event: str, args: tuple) -> None:
    if event == "subprocess.Popen" and RECORDING:
        argv = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        STARTED.append(b" ".join(os.fsencode(arg) for arg in argv))


sys.addaudithook(_record)


def _secrets(stack) -> dict[str, bytes]:
    from worker_app.db.privileges import DUTIES

    return {name: password.encode() for name, password in (
        ("PostgreSQL", stack.postgres.password), ("broker Redis", stack.broker.password),
        ("cache Redis", stack.cache.password),
        *((f"PostgreSQL {duty}", stack.postgres.duty_password(duty)) for duty in DUTIES))}


def _masked(line: bytes, secrets: dict[str, bytes]) -> str:
    """A command line fit for the test's report, which CI keeps: the secrets replaced by their names."""
    for name, secret in secrets.items():
        line = line.replace(secret, f"<{name} password>".encode())
    return repr(line[:160])


def _where(secrets: dict[str, bytes], files) -> list[str]:
    found = []
    for path in files:
        try:
            data = Path(path).read_bytes()
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue  # gone since listed (a rotated log, a temporary file), or a socket
        found += [f"{name} password in {path}" for name, secret in secrets.items() if secret in data]
    return found


def test_the_secrets_are_only_in_the_files_meant_to_hold_them(stack, library_root):
    library = make_library(library_root / "secrets", n_files=6, seed=5, corrupt=False, untagged=False,
                           odd_file_names=False)
    RECORDING.append(True)
    try:
        result = stack.soniquebay("scan", str(library.root), "--wait", "--json", "--timeout", "300", check=False)
        # What other tests do to the services: their command lines count as much as the workers'.
        assert stack.broker.cli("PING") == stack.cache.cli("PING") == "PONG"
        stack.postgres.psql("SELECT 1")
    finally:
        RECORDING.clear()
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout)["status"] == "complete"
    secrets = _secrets(stack)
    assert all(len(secret) >= 16 for secret in secrets.values())

    # The workers' env file holds all of them; each Redis reads its own from its configuration.
    meant = {stack.env_file, stack.broker.folder / "redis.conf", stack.cache.folder / "redis.conf"}
    written = [path for path in stack.base.rglob("*") if path.is_file() and path not in meant]
    assert stack.supervisor.log("extract") in written
    assert any(path.name == "supervisord.conf" for path in written)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    repository = [REPO / name for name in tracked.decode().split("\0") if name]
    assert repository

    command_lines = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command_lines[proc.name] = (proc / "cmdline").read_bytes()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue  # ended meanwhile
    assert any(b"celery" in line for line in command_lines.values())  # the workers were looked at
    in_ps = [f"{name} password in the command line of process {pid}: {_masked(line, secrets)}"
             for pid, line in command_lines.items() for name, secret in secrets.items() if secret in line]
    assert len(STARTED) >= 3
    in_ps += [f"{name} password in the command line of {_masked(line, secrets)}, started by the tests"
              for line in STARTED for name, secret in secrets.items() if secret in line]

    found = _where(secrets, repository) + _where(secrets, written) + in_ps
    assert not found, "\n".join(found)
    # ... and they are where they are meant to be, so the search above was for the right strings.
    assert all(secret in stack.env_file.read_bytes() for secret in secrets.values())
