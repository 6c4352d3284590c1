"""The deployment's own checks: every playbook parses against both inventories, and ansible-lint's production
profile passes on the whole tree (tests/run installs Ansible into .venv-ansible from requirements-ansible.txt)."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.services import REPO

ANSIBLE_BIN = REPO / ".venv-ansible" / "bin"


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("inventory", ["inventory/prod", "inventory/local"])
@pytest.mark.parametrize("playbook", ["site.yml", "playbooks/scan.yml", "playbooks/upgrade.yml"])
def test_playbooks_parse(inventory, playbook):
    result = _run(str(ANSIBLE_BIN / "ansible-playbook"), playbook, "-i", inventory, "--syntax-check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile_passes():
    result = _run(str(ANSIBLE_BIN / "ansible-lint"), "--profile", "production", "site.yml", "playbooks", "roles")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


# --- Secrets and the least privilege of the roles -------------------------------------------------------------

# Variables that hold a secret, by name: a task that reads one must not print it (--diff, -v, a failure).
SECRET_NAME = re.compile(r"\b\w*(?:password|passwd|secret|token|basic_auth|_key)\w*\b")
# Only its length: an assert that a secret is set does not handle its value, and no_log would hide its message.
LENGTH_ONLY = re.compile(r"\b\w+\s*\|\s*length\b")
TASK_FILES = sorted([*REPO.glob("roles/*/tasks/*.yml"), *REPO.glob("roles/*/handlers/*.yml"),
                     *REPO.glob("playbooks/*.yml")])


def _tasks(items, inherited_no_log=False):
    """Every task of a task list or play, with whether no_log covers it (its own, or an enclosing block's)."""
    for item in items or []:
        if not isinstance(item, dict):
            continue
        no_log = bool(item.get("no_log", inherited_no_log))
        nested = [key for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers")
                  if isinstance(item.get(key), list)]
        if nested:
            for key in nested:
                yield from _tasks(item[key], no_log)
        else:
            yield item, no_log


JINJA = re.compile(r"\{\{(.*?)\}\}", re.S)


def _secrets_read(task: dict, role: Path | None = None) -> set[str]:
    """Secret variables whose value the task renders (inside {{ }} in its module's arguments, its vars, or the
    role template it writes): what --diff, -v or a failure would print. Bare conditions (when, an assert's that)
    only test it."""
    text = yaml.safe_dump({key: value for key, value in task.items() if key not in ("name", "no_log")}, width=10**6)
    source = (task.get("ansible.builtin.template") or {}).get("src")
    if role is not None and source and (role / "templates" / source).is_file():
        text += (role / "templates" / source).read_text()
    rendered = " ".join(JINJA.findall(text))
    return set(SECRET_NAME.findall(LENGTH_ONLY.sub("", rendered)))


def test_every_task_that_handles_a_secret_has_no_log():
    assert TASK_FILES
    offenders = []
    for path in TASK_FILES:
        role = path.parent.parent if path.parts[-3] != "playbooks" and "roles" in path.parts else None
        for task, no_log in _tasks(yaml.safe_load(path.read_text())):
            secrets = _secrets_read(task, role)
            if secrets and not no_log:
                offenders.append(f"{path.relative_to(REPO)}: {task.get('name')!r} reads {sorted(secrets)}")
    assert not offenders, "tasks that handle a secret without no_log: true:\n" + "\n".join(offenders)


def test_the_secret_check_finds_a_task_that_prints_a_secret():
    task = {"name": "x", "ansible.builtin.template": {"src": "a", "dest": "{{ redis_password }}"}}
    assert _secrets_read(task) == {"redis_password"}
    assert list(_tasks([{"block": [task], "no_log": True}])) == [(task, True)]
    assert not _secrets_read({"ansible.builtin.assert": {"that": ["flower_basic_auth | length > 0"],
                                                         "fail_msg": "set a password"}})
    assert _secrets_read({"ansible.builtin.debug": {"msg": "{{ flower_basic_auth }}"}}) == {"flower_basic_auth"}


def test_the_env_file_is_root_owned_and_only_readable_by_the_workers():
    tasks = yaml.safe_load((REPO / "roles/worker_app/tasks/config.yml").read_text())
    env = [task["ansible.builtin.template"] for task in tasks
           if task.get("ansible.builtin.template", {}).get("src") == "worker.env.j2"]
    # The workers' and the monitor's (the exporter's and Flower's, with the broker's monitor user).
    assert [task["dest"] for task in env] == ["{{ worker_app_env_file }}", "{{ worker_app_monitor_env_file }}"]
    assert all(task == {**task, "owner": "root", "group": "{{ worker_app_group }}", "mode": "0640"} for task in env)


def _converge_monitor(tmp_path, **variables) -> subprocess.CompletedProcess:
    """The supervisor role's monitor checks, run for real against this host (no firewall, nothing installed)."""
    playbook = tmp_path / "monitor.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "tasks": [{"ansible.builtin.include_role": {"name": "supervisor", "tasks_from": "monitor.yml"},
                   "vars": {"supervisor_flower_firewall": False, **variables}}],
    }]))
    return _run(str(ANSIBLE_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook),
                "-e", "ansible_python_interpreter=/usr/bin/python3")


def test_flower_beyond_loopback_without_credentials_does_not_converge(tmp_path):
    exposed = _converge_monitor(tmp_path, supervisor_flower_address="0.0.0.0")
    assert exposed.returncode != 0
    assert "Flower would listen on 0.0.0.0:5555 with no password" in exposed.stdout
    assert _converge_monitor(tmp_path).returncode == 0  # loopback: reached through ssh -L
    secured = _converge_monitor(tmp_path, supervisor_flower_address="0.0.0.0",
                                supervisor_flower_basic_auth="admin:s3cret-test-value")
    assert secured.returncode == 0, secured.stdout
    assert "s3cret-test-value" not in secured.stdout + secured.stderr


def test_the_monitor_firewall_covers_flowers_port():
    import jinja2

    source = (REPO / "roles/supervisor/templates/soniquebay-monitor-firewall.nft.j2").read_text()
    rendered = jinja2.Template(source).render(ansible_managed="managed", supervisor_flower_port=5566,
                                              supervisor_flower_allowed_addresses=["10.20.0.0/24"])
    assert "elements = { 10.20.0.0/24 }" in rendered
    assert "tcp dport 5566 ip saddr @allowed_v4 accept" in rendered
    assert "tcp dport 5566 reject with tcp reset" in rendered
    assert rendered.index("accept\n") < rendered.index("reject")
    tasks = (REPO / "roles/supervisor/tasks/main.yml").read_text()
    assert "monitor.yml" in tasks


def _library_check_script() -> list[str]:
    tasks = yaml.safe_load((REPO / "roles/worker_app/tasks/library.yml").read_text())
    check = next(task for block in tasks for task in block.get("block", [])
                 if task.get("name", "").startswith("Check that the service user can read but not write"))
    argv = check["ansible.builtin.command"]["argv"]
    return argv[argv.index("--") + 1:argv.index("{{ item }}")]


@pytest.fixture
def public_tmp():
    """A folder an unprivileged user can reach (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="soniquebay-library-check-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_library_read_only_check_looks_below_the_roots_within_its_bounds(public_tmp):
    """The role's own check, run as an unprivileged user on a library whose root is read-only but a file deep
    inside is writable: found within the bounds, missed (by design) beyond them."""
    shell = _library_check_script()
    root = public_tmp / "library"
    deep = root / "Artist" / "Album"
    deep.mkdir(parents=True)
    for folder in (public_tmp, root, root / "Artist", deep):
        folder.chmod(0o755)
    song = deep / "01.flac"
    song.write_bytes(b"")
    song.chmod(0o644)

    def check(sample: int, depth: int) -> subprocess.CompletedProcess:
        return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *shell,
                               str(root), str(sample), str(depth)], capture_output=True, text=True, timeout=60)

    assert check(100, 4).returncode == 0
    song.chmod(0o666)
    found = check(100, 4)
    assert (found.returncode, found.stdout.strip()) == (4, str(song))
    assert check(100, 2).returncode == 0  # deeper than the bound
    root.chmod(0o757)
    assert check(1, 1).returncode == 4  # the root itself, whatever the bounds
