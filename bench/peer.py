"""The peer: beets importing the same files as they are (`beet import -A -q`: no autotagging, no copying, no
writing), from PyPI into a virtualenv of its own under the benchmark's cache folder."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The version whose figures bench/README.md gives; the venv is rebuilt when this changes.
BEETS_VERSION = "2.14.1"

CONFIG = """\
directory: {music}
library: {database}
plugins: []
threaded: yes
import:
  copy: no
  move: no
  link: no
  hardlink: no
  reflink: no
  write: no
  autotag: no
  resume: no
  incremental: no
  log: null
ui:
  color: no
"""


def ensure_beets(cache: Path, log=print) -> Path:
    """The `beet` executable of a virtualenv under ``cache`` holding beets BEETS_VERSION."""
    venv = cache / f"beets-{BEETS_VERSION}-venv"
    beet = venv / "bin" / "beet"
    if beet.exists():
        return beet
    if venv.exists():
        shutil.rmtree(venv)
    log(f"  installing beets {BEETS_VERSION} from PyPI into {venv} ...")
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"beets=={BEETS_VERSION}"], check=True)
    return beet


def beets_import(beet: Path, root: Path, expected: int, work: Path, time_limit: float | None = None) -> dict:
    """Time `beet import -A -q ROOT` into a new library database; returns seconds and items imported.

    beets gets slower as its library grows (at 50,000 files it had imported 29,000 after 35 minutes), so an import
    still running after ``time_limit`` is stopped and rated by the items it had imported by then: a figure in
    beets' favour, as its rate only falls."""
    work.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="beets-", dir=work))
    try:
        config = folder / "config.yaml"
        database = folder / "library.db"
        config.write_text(CONFIG.format(music=folder / "music", database=database))
        env = {**os.environ, "BEETSDIR": str(folder)}
        command = [str(beet), "-c", str(config), "import", "-A", "-q", str(root)]
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, error = process.communicate(timeout=time_limit)
            complete = True
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
            error, complete = "", False
        seconds = time.perf_counter() - started
        if complete and process.returncode != 0:
            raise RuntimeError(f"beet import failed ({process.returncode}): {error[-2000:]}")
        imported = _items(database)
        done = expected if complete else (imported or 0)
        return {"seconds": seconds, "files_per_s": done / seconds, "items_imported": imported,
                "complete": complete, "version": BEETS_VERSION}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _items(database: Path) -> int | None:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            return connection.execute("SELECT count(*) FROM items").fetchone()[0]
    except sqlite3.Error:
        return None
