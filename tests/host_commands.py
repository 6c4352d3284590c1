"""ci/host-commands.tsv, read for the tests: the commands the tests and the Molecule scenarios run on the host, and
what the scripts and the test session actually run, so that the two can be compared."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TABLE = REPO / "ci" / "host-commands.tsv"
GROUPS = ("base", "tests", "podman")

# The host-side scripts of `bash tests/run`: itself, the CI set-up scripts and the scenarios' host steps.
SCRIPTS = ("tests/run", ".ci/run", "ci/*.sh", "molecule/shared/*.sh", "molecule/*/make-library.sh")

SHELL_WORDS = set("""
    [ [[ ] ]] { } ! if then else elif fi for while until do done case esac in function select time
    echo printf read cd exit return set shift local export declare unset trap wait kill test true false source
    . : exec eval mapfile readarray command type shopt let break continue umask hash getopts pwd
""".split())


@dataclass(frozen=True)
class Row:
    command: str
    package: str
    group: str
    why: str

    @property
    def name(self) -> str:
        """How scripts call it: the bare name, or the path when the table gives a path."""
        return self.command


def rows() -> list[Row]:
    table = []
    for line in TABLE.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise ValueError(f"{TABLE.name}: not 4 tab-separated fields: {line!r}")
        table.append(Row(*fields))
    return table


def known_commands() -> set[str]:
    """Every name or path the table lists, and the base names of its paths."""
    names = set()
    for row in rows():
        names.add(row.command)
        names.add(os.path.basename(row.command))
    return names


def script_files() -> list[Path]:
    files: list[Path] = []
    for pattern in SCRIPTS:
        files.extend(sorted(REPO.glob(pattern)))
    return files


_SEPARATORS = re.compile(r"\|\||&&|\$\(|<\(|>\(|[|;&`(]|\bthen\b|\bdo\b|\belse\b")
_HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")
_ARRAY_START = re.compile(r"^\s*\w+=\([^)]*$")
_FUNCTION = re.compile(r"^\s*(?:function\s+)?([\w-]+)\s*\(\)\s*\{?")
_PREFIXES = {"exec", "time", "nohup", "env", "xargs", "sudo", "!"}


def _blank_quotes(text: str) -> str:
    """The script with the words inside quotes removed (a single-quoted string becomes Q, a double-quoted one keeps
    only its quotes and its command substitutions, which are code) and the line breaks kept."""
    out: list[str] = []
    stack: list[list] = [["code", 0]]  # "code" (with its open parentheses inside a substitution) or "dq"
    i = 0
    while i < len(text):
        c = text[i]
        mode = stack[-1]
        if c == "\\":
            out.append(text[i:i + 2] if mode[0] == "code" else "")
            i += 2
            continue
        if mode[0] == "code":
            if c == "#" and (i == 0 or text[i - 1] in " \t\n;"):
                end = text.find("\n", i)
                i = len(text) if end < 0 else end
                continue
            if c == "'":
                end = text.find("'", i + 1)
                end = len(text) if end < 0 else end
                out.append("Q" + "\n" * text.count("\n", i, end))
                i = end + 1
                continue
            if c == '"':
                stack.append(["dq", 0])
                out.append('"')
            elif len(stack) > 1 and c == "(":
                mode[1] += 1
                out.append(c)
            elif len(stack) > 1 and c == ")":
                if mode[1] == 0:
                    stack.pop()
                else:
                    mode[1] -= 1
                out.append(c)
            else:
                out.append(c)
            i += 1
            continue
        if c == '"':
            stack.pop()
            out.append('"')
        elif text.startswith("$(", i):
            stack.append(["code", 0])
            out.append("$(")
            i += 2
            continue
        elif c == "\n":
            out.append(c)
        i += 1
    return "".join(out)


def commands_in_script(path: Path) -> set[str]:
    """The commands a shell script runs (the first word of each simple command), less builtins, its own functions,
    variables and the repository's own files. A parser of the common forms, not of all of bash."""
    text = path.read_text()
    functions = {match.group(1) for match in map(_FUNCTION.match, text.splitlines()) if match}
    # Here-documents hold other languages (Python, configuration): out first, then every quoted string (some span
    # lines), arithmetic, and arrays of data (lists of package names).
    kept: list[str] = []
    heredoc_end: str | None = None
    for raw in text.splitlines():
        if heredoc_end is not None:
            if raw.strip() == heredoc_end:
                heredoc_end = None
            continue
        heredoc = _HEREDOC.search(raw) if not raw.lstrip().startswith("#") else None
        if heredoc:
            heredoc_end = heredoc.group(1)
        kept.append(raw)
    text = _blank_quotes("\n".join(kept))
    text = re.sub(r"\$\(\((?:[^()]|\([^()]*\))*\)\)", "0", text)
    lines: list[str] = []
    pending = ""
    in_array = False
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if in_array:
            in_array = ")" not in raw
            continue
        if _ARRAY_START.match(raw):
            in_array = True
            continue
        line = pending + raw
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        lines.append(line)
    found: set[str] = set()
    for line in lines:
        line = re.sub(r"\s#.*$", "", line)
        line = re.sub(r"\d*[<>]&\d*-?|&>>?", " ", line)
        for segment in _SEPARATORS.split(line):
            words = segment.split()
            while words and (re.match(r"^\w+(\[[^]]*\])?\+?=", words[0]) or words[0] in _PREFIXES):
                words.pop(0)
            if words and words[0] == "timeout":
                words = [w for w in words[1:] if not w.startswith("-")][1:]
            if not words:
                continue
            word = words[0]
            if words[:2] == ["command", "-v"]:
                continue
            if (word in SHELL_WORDS or word in functions or word == "Q" or word.endswith(")")
                    or word.startswith(("$", '"', "'", "<", ">", "-", "{", "}", ")", "["))
                    or re.match(r"^\d*[<>]", word) is not None
                    or word.startswith(("./", "../")) or "/" in word and not word.startswith("/")):
                continue
            found.add(word)
    return found


def owning_package(file: str) -> str | None:
    """The Debian package that ships a file (None: none does); /bin and /usr/bin are one folder (merged /usr)."""
    real = os.path.realpath(file)
    for candidate in (file, real, real.removeprefix("/usr"), "/usr" + real):
        result = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def package_field(package: str, field: str) -> str | None:
    result = subprocess.run(["dpkg-query", "-W", f"-f=${{{field}}}", package], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


class ProgramLog:
    """The programs this Python process starts (an audit hook on subprocess.Popen), outside the virtualenv and the
    repository: what the test session needs from the host."""

    def __init__(self) -> None:
        self.started: dict[str, str] = {}  # program -> the first command line that started it

    def install(self) -> None:
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if event != "subprocess.Popen":
            return
        executable, argv = args[0], args[1]
        if isinstance(argv, (str, bytes)):
            argv = [argv]
        program = os.fsdecode(executable or (argv[0] if argv else ""))
        if not program:
            return
        if program.startswith((sys.prefix, str(REPO))) or os.path.realpath(program) == os.path.realpath(
                sys.executable):
            return
        self.started.setdefault(program, " ".join(os.fsdecode(a) for a in list(argv)[:4]))

    def unknown(self) -> dict[str, str]:
        known = known_commands()
        return {program: line for program, line in sorted(self.started.items())
                if program not in known and os.path.basename(program) not in known}
