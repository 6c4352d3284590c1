#!/usr/bin/env bash
# Generate a tagged sample library for a Molecule scenario (on the host; the
# scenario bind-mounts it read-only into its worker containers).
#   molecule/shared/library.sh DEST FILES SEED
# Writes DEST/ (the audio files), DEST.manifest.json (the answer key) and
# DEST.counts.json ({"tracks": N, "corrupt": M}). Kept between runs while the
# parameters and tests/audio_factory.py are unchanged.
set -euo pipefail
dest=$1 files=$2 seed=$3
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"

key="files=$files seed=$seed factory=$(sha256sum tests/audio_factory.py | cut -c1-16)"
if [ -f "$dest.done" ] && [ "$(cat "$dest.done")" = "$key" ] && [ -d "$dest" ]; then
    echo "library $dest: up to date ($key)"
    exit 0
fi

# What tests/run installs for the generator: ffmpeg, and the repository's .venv.
if ! command -v ffmpeg > /dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg > /dev/null
fi
if ! .venv/bin/python -c 'import numpy, soundfile, mutagen, PIL, dotenv' > /dev/null 2>&1; then
    [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
    .venv/bin/pip install -q -r requirements-dev.txt
    .venv/bin/pip install -q --no-deps -e .
fi

rm -rf "$dest" "$dest.done" "$dest.manifest.json" "$dest.counts.json"
mkdir -p "$(dirname "$dest")"
.venv/bin/python -m tests.audio_factory "$dest" --files "$files" --seed "$seed" --manifest "$dest.manifest.json"
.venv/bin/python - "$dest.manifest.json" "$dest.counts.json" <<'PY'
import json, sys
manifest = json.load(open(sys.argv[1]))
json.dump({"tracks": len(manifest["tracks"]), "corrupt": len(manifest["corrupt"])}, open(sys.argv[2], "w"))
PY
# Readable by the containers' service user; the mount is read-only anyway.
chmod -R a+rX "$dest"
echo "$key" > "$dest.done"
