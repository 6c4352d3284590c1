"""What a fresh machine needs, checked against ci/host-commands.tsv: every command the test and CI scripts run is
listed with the Debian package that provides it, each listed package is installed by the project's own scripts
(or is on every Debian system), and the table is true on this machine. The programs the test session itself starts
are checked at its end (tests/conftest.py)."""
from __future__ import annotations

import os
import re
import shutil

import pytest

from tests.host_commands import (
    GROUPS,
    REPO,
    ProgramLog,
    commands_in_script,
    known_commands,
    owning_package,
    package_field,
    rows,
    script_files,
)


def test_the_table_names_each_command_once_in_a_known_group():
    table = rows()
    commands = [row.command for row in table]
    assert len(commands) == len(set(commands)), "a command is listed twice"
    assert {row.group for row in table} <= {*GROUPS, "pip"}
    assert all(row.why.strip() for row in table), "every row says who runs the command"


@pytest.mark.parametrize("script", script_files(), ids=lambda path: str(path.relative_to(REPO)))
def test_every_command_a_script_runs_is_in_the_table(script):
    unknown = sorted(commands_in_script(script) - known_commands())
    assert unknown == [], f"{script.relative_to(REPO)} runs commands ci/host-commands.tsv does not list: {unknown}"


def test_the_script_reader_sees_commands_and_not_data():
    """The reader must find commands in pipes, substitutions and conditions, and not in strings, comments,
    here-documents or arrays of package names; else the test above proves little."""
    script = REPO / ".run" / "host-commands-sample.sh"
    script.parent.mkdir(exist_ok=True)
    script.write_text("""#!/usr/bin/env bash
# a comment that names rsync and says: don't
LIST=(
    nginx  # keep in sync (data)
)
x=$(wc -l < "$(realpath "$0")") && sort -u file | uniq || true
if ! command -v zstd >/dev/null 2>&1; then echo 'curl in a string'; fi
timeout --kill-after=5 30 tee out
python3 - <<'PY'
import os; os.system('wget')
PY
exec 9> lock; flock 9
""")
    try:
        assert commands_in_script(script) == {"wc", "realpath", "sort", "uniq", "tee", "python3", "flock"}
    finally:
        script.unlink()


def test_base_packages_are_on_every_debian_system():
    """The `base` group is installed by nothing: its packages must be of priority required (debootstrap's minbase
    has them, and so has every Debian machine)."""
    for package in sorted({row.package for row in rows() if row.group == "base"}):
        assert package_field(package, "Priority") == "required", package


def test_each_group_is_installed_from_the_table_by_the_script_that_needs_it():
    tests_run = (REPO / "tests" / "run").read_text()
    podman_setup = (REPO / "ci" / "podman-setup.sh").read_text()
    assert "ci/host-commands.sh install tests" in tests_run
    assert "ci/host-commands.sh check base tests" in tests_run
    assert re.search(r"host-commands\.sh\" install (--with-recommends )?podman", podman_setup)
    assert "host-commands.sh\" check base podman" in podman_setup
    # No second list of packages beside the table.
    for text in (tests_run, podman_setup):
        assert "apt-get install" not in text


def test_pip_commands_are_pinned_requirements():
    for row in rows():
        if row.group != "pip":
            continue
        _, file, name = row.package.split(":")
        requirements = (REPO / file).read_text().lower()
        assert re.search(rf"^{re.escape(name)}(\[[^]]*\])?==", requirements, re.M), row


@pytest.mark.parametrize("group", ["base", "tests", "podman"])
def test_the_table_is_true_on_this_machine(group):
    """Each listed command comes from the package the table names (checked where the package is installed: tests/run
    installs `tests`, and `podman` too unless SONIQUEBAY_SKIP_MOLECULE=1)."""
    table = [row for row in rows() if row.group == group]
    installed = [row for row in table if package_field(row.package, "Status") == "install ok installed"]
    if group != "podman":
        assert installed == table, f"not installed: {[row.package for row in table if row not in installed]}"
    if not installed:
        pytest.skip("podman's group is installed by ci/podman-setup.sh, which SONIQUEBAY_SKIP_MOLECULE=1 skips")
    wrong = {}
    for row in installed:
        file = row.command if row.command.startswith("/") else shutil.which(row.command)
        if file is None or not os.path.exists(file):
            wrong[row.command] = "missing"
            continue
        owner = owning_package(file)
        if owner is not None and owner != row.package:  # None: not from a package (a pyenv python3)
            wrong[row.command] = f"{file} comes from {owner}, not {row.package}"
    assert wrong == {}


def test_the_session_log_records_the_programs_started():
    log = ProgramLog()
    log._hook("subprocess.Popen", ("/usr/bin/date", ["/usr/bin/date"], None, None))
    log._hook("subprocess.Popen", (None, ["not-a-listed-command", "-x"], None, None))
    log._hook("subprocess.Popen", (None, [str(REPO / ".venv" / "bin" / "celery")], None, None))
    assert log.unknown() == {"not-a-listed-command": "not-a-listed-command -x"}
