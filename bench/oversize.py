"""What worker_app/metadata/oversize.py buys: memory and CPU of reading files whose tags hold one huge item.

    bench/run oversize [--mb 64,256] [--limit-mb 512]

For each file kind (a picture in an ID3v2 APIC frame, an MP4 covr atom, an Ogg Vorbis
METADATA_BLOCK_PICTURE comment; a huge ID3v2 TXXX text), one fresh process per measurement reads the file:

* ``mutagen``: ``mutagen.File(path)``, what mutagen alone costs;
* ``extractor``: ``read_track(path)`` as the workers call it (pictures above ``max_cover_bytes``, 16 MB, are cut out
  before mutagen reads them: oversize.py);
* ``no_oversize``: ``read_track(path)`` with oversize.py's scanners switched off (``plan_edits`` finds nothing and
  the capped MP4/Ogg classes are not used): mutagen reads the item whole, then the extractor drops it (the code
  path that would remain without oversize.py).

Each gives the process's peak RSS above its RSS after the imports (``VmHWM``), its CPU seconds, and whether the
read gave a record. Then the same read again under an address-space limit (``RLIMIT_AS``) of the process's size
after imports plus ``--limit-mb`` (default 512 MB: the extract workers' ``worker_max_memory_per_child``, 512,000 KiB,
which Celery only checks after a task and so cannot stop one read): what the MemoryError path gives then. Writes
bench/results/oversize.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# FLAC is not among them: a metadata block's length is 24 bits, so no FLAC PICTURE exceeds 16 MiB, the default limit.
# Ogg is not among the defaults: mutagen takes minutes to write a comment packet of tens of MB (--kinds ogg-picture).
KINDS = ("mp3-apic", "m4a-covr", "mp3-txxx")

_CHILD = r"""
import json, resource, sys, time
mode, path, limit_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
import mutagen
from worker_app.metadata import reader
from worker_app.metadata.record import UnreadableFileError
if mode == "no_oversize":
    reader.plan_edits = lambda *args: []
    reader.CAPPED_CLASSES = {}
def status_kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))
def vm_bytes():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) * 1024
reader.current_limits()  # the settings, imported and read before the baseline
base = status_kib("VmRSS:")
if limit_mb:
    limit = vm_bytes() + limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
cpu = time.process_time()
outcome = "record"
try:
    if mode == "mutagen":
        mutagen.File(path)
    else:
        record = reader.read_track(path, time_limit=0)
        if record.cover is None and any("skipped" in w for w in record.warnings):
            outcome = "record, item skipped"
except MemoryError:
    outcome = "MemoryError"
except UnreadableFileError as error:
    outcome = "unreadable: " + error.reason[:80]
cpu = time.process_time() - cpu
peak = status_kib("VmHWM:")  # not ru_maxrss, which keeps the peak of the process that forked this one
print(json.dumps({"peak_above_base_mb": round((peak - base) / 1024, 1), "cpu_s": round(cpu, 3), "outcome": outcome}))
"""


def _encode(kind: str, folder: Path) -> Path:
    extension = {"mp3": "mp3", "flac": "flac", "m4a": "m4a", "ogg": "ogg"}[kind.split("-")[0]]
    codec = {"mp3": "libmp3lame", "flac": "flac", "m4a": "aac", "ogg": "libvorbis"}[extension]
    path = folder / f"{kind}.{extension}"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-c:a", codec, str(path)], check=True)
    return path


def make_file(kind: str, folder: Path, size: int) -> Path:
    """A 2-second file of ``kind`` with one tag item of ``size`` bytes (a JPEG header and noise, or text)."""
    import base64

    from mutagen.flac import FLAC, Picture
    from mutagen.id3 import APIC, ID3, TXXX
    from mutagen.mp4 import MP4, MP4Cover
    from mutagen.oggvorbis import OggVorbis

    path = _encode(kind, folder)
    image = b"\xff\xd8\xff\xe0" + os.urandom(size - 4)
    if kind == "mp3-apic":
        tags = ID3()
        tags.add(APIC(encoding=0, mime="image/jpeg", type=3, desc="", data=image))
        tags.save(path)
    elif kind == "mp3-txxx":
        tags = ID3()
        tags.add(TXXX(encoding=3, desc="notes", text=["x" * size]))
        tags.save(path)
    elif kind == "flac-picture":
        flac = FLAC(path)
        picture = Picture()
        picture.type, picture.mime, picture.data = 3, "image/jpeg", image
        flac.add_picture(picture)
        flac.save()
    elif kind == "m4a-covr":
        mp4 = MP4(path)
        mp4["covr"] = [MP4Cover(image, imageformat=MP4Cover.FORMAT_JPEG)]
        mp4.save()
    elif kind == "ogg-picture":
        ogg = OggVorbis(path)
        picture = Picture()
        picture.type, picture.mime, picture.data = 3, "image/jpeg", image
        ogg["metadata_block_picture"] = [base64.b64encode(picture.write()).decode("ascii")]
        ogg.save()
    return path


def measure(mode: str, path: Path, limit_mb: int) -> dict[str, object]:
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", _CHILD, mode, str(path), str(limit_mb)], capture_output=True,
                          text=True, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    if done.returncode != 0:
        return {"outcome": f"process failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}"}
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", default="64,160", help="sizes of the huge item, in MB, comma-separated")
    parser.add_argument("--limit-mb", type=int, default=512, help="address space allowed above the imports")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}, ogg-picture")
    arguments = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-oversize-") as folder:
        for size_mb in (int(size) for size in arguments.mb.split(",")):
            for kind in arguments.kinds.split(","):
                path = make_file(kind, Path(folder), size_mb * 1024 * 1024)
                for mode in ("mutagen", "extractor", "no_oversize"):
                    row = {"kind": kind, "item_mb": size_mb, "mode": mode, **measure(mode, path, 0)}
                    limited = measure(mode, path, arguments.limit_mb)
                    row["under_limit"] = limited["outcome"]
                    rows.append(row)
                    print(f"{kind:13} {size_mb:5} MB  {mode:12} peak +{row.get('peak_above_base_mb')} MB  "
                          f"cpu {row.get('cpu_s')} s  {row['outcome']:24}  under {arguments.limit_mb} MB: "
                          f"{row['under_limit']}", flush=True)
                path.unlink()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "oversize.json").write_text(json.dumps({"limit_mb": arguments.limit_mb, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
