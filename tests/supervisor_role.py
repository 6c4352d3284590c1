"""The Ansible supervisor role's worker programs, rendered for a test host: the role's defaults
(roles/supervisor/defaults/main.yml), its sizing task (tasks/sizing.yml) and its program template
(templates/worker-program.conf.j2), evaluated with Jinja2 as Ansible evaluates them, for a host whose facts and
variables the caller gives. The tests run the programs this yields, so what they prove holds for the deployed
configuration; only paths, ports and the user differ (tests run in a private folder, possibly as root)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.nativetypes import NativeEnvironment

ROLE = Path(__file__).resolve().parent.parent / "roles" / "supervisor"


def _to_bool(value: Any) -> bool:
    """Ansible's `bool` filter."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("yes", "on", "1", "true", "y", "t")


def _combine(*dicts: dict) -> dict:
    """Ansible's `combine` filter (not recursive, as the role calls it)."""
    merged: dict = {}
    for one in dicts:
        merged.update(one)
    return merged


def _environment(cls: type[jinja2.Environment]) -> jinja2.Environment:
    # Ansible's template module trims the newline after a block tag; StrictUndefined so that a variable the role
    # reads and this file does not give fails here rather than rendering as an empty string.
    env = cls(undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    env.filters.update(bool=_to_bool, combine=_combine, dirname=os.path.dirname)
    return env


_NATIVE = _environment(NativeEnvironment)
_TEXT = _environment(jinja2.Environment)


def _is_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_is_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_is_template(v) for v in value)
    return False


def _render(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str) and _is_template(value):
        return _NATIVE.from_string(value).render(variables)
    if isinstance(value, dict):
        return {key: _render(v, variables) for key, v in value.items()}
    if isinstance(value, list):
        return [_render(v, variables) for v in value]
    return value


def defaults() -> dict[str, Any]:
    """roles/supervisor/defaults/main.yml, as written."""
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def host_variables(host_vars: dict[str, Any]) -> dict[str, Any]:
    """The role's defaults with ``host_vars`` over them (as inventory variables are), their templates evaluated:
    Ansible evaluates a variable when it is used, here each one as soon as the variables it reads are known. One that
    reads a variable nobody gives is left out, so that a template using it fails (Ansible fails then too)."""
    raw = {**defaults(), **host_vars}
    known = {name: value for name, value in raw.items() if not _is_template(value)}
    pending = {name: value for name, value in raw.items() if name not in known}
    while pending:
        progressed = False
        for name, value in list(pending.items()):
            try:
                known[name] = _render(value, known)
            except jinja2.UndefinedError:
                continue
            del pending[name]
            progressed = True
        if not progressed:
            break
    return known


def _task(tasks_file: str, name: str) -> dict:
    tasks = yaml.safe_load((ROLE / "tasks" / tasks_file).read_text())
    return next(task for task in tasks if task.get("name") == name)


def size_programs(variables: dict[str, Any]) -> list[dict[str, Any]]:
    """The programs of sizing.yml (``supervisor_worker_programs``): its own loop and expression, evaluated."""
    task = _task("sizing.yml", "Size one worker program per queue group of this host")
    (expression,) = task["ansible.builtin.set_fact"].values()
    programs: list[dict[str, Any]] = []
    for item in _render(task["loop"], variables):
        programs = _render(expression, {**variables, "supervisor_worker_programs_new": programs, "item": item})
    return programs


def render_template(name: str, variables: dict[str, Any]) -> str:
    """One of the role's templates, rendered as the role writes it."""
    return _TEXT.from_string((ROLE / "templates" / name).read_text()).render(variables)


def render_program(item: dict[str, Any], variables: dict[str, Any]) -> str:
    """One program's section, as the role writes it to conf.d/<program>.conf."""
    return render_template("worker-program.conf.j2", {**variables, "item": item})


def watchdog_wanted(variables: dict[str, Any]) -> bool:
    """Whether the role runs the watchdog on this host (programs.yml: on, and some worker program)."""
    return _to_bool(variables["supervisor_watchdog_enabled"]) and bool(size_programs(variables))


def render_watchdog(variables: dict[str, Any]) -> str:
    """The watchdog's event listener section (conf.d/<supervisor_watchdog_program>.conf)."""
    return render_template("watchdog-program.conf.j2",
                           {**variables, "supervisor_worker_programs": size_programs(variables)})
