"""The deployment's own checks: every playbook parses against both inventories, and ansible-lint's production
profile passes on the whole tree (tests/run installs Ansible into .venv-ansible from requirements-ansible.txt)."""
from __future__ import annotations

import subprocess

import pytest

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
