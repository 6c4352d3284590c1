"""What the workers install is pinned (requirements.txt) and listed in README.md's licence table; none of it is AGPL."""
import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [Requirement(line).name for line in lines if line.strip() and not line.startswith("#")]


def _licence_table() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Dependencies and licences", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("| "))


def _closure(names: list[str]) -> set[str]:
    """The installed distributions these need, with what they need in turn (markers evaluated here, no extras)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def test_every_runtime_dependency_is_pinned_and_in_the_licence_table():
    names = _pinned()
    pinned = {_canonical(name) for name in names}
    unpinned = sorted(_closure(names) - pinned)
    assert not unpinned, f"installed for the workers, not pinned in requirements.txt: {unpinned}"
    table = _canonical(_licence_table())
    missing = sorted(name for name in pinned if name not in table)
    assert not missing, f"requirements.txt pins these, README.md's licence table does not name them: {missing}"


def test_no_runtime_dependency_is_under_the_affero_gpl():
    everything = _closure(_pinned())
    assert "orjson" in everything and "kombu" in everything  # the closure reaches both pins and what they need
    affero = {}
    for name in sorted(everything):
        metadata = importlib.metadata.metadata(name)
        said = " ".join(filter(None, [metadata.get("License-Expression"), (metadata.get("License") or "")[:300],
                                      *(metadata.get_all("Classifier") or [])]))
        if re.search(r"\bAGPL|Affero", said):
            affero[name] = said
    assert not affero, affero
