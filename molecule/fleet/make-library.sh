#!/usr/bin/env bash
# The fleet scenario's `dependency` step: host preparation (SSH key, network),
# then three generated libraries under one root, bind-mounted read-only at
# /srv/music in every worker container: a/ (first scan), b/ (after scaling
# out), c/ (scanned while an extract host is lost).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/../shared/host-prep.sh" sb-fleet 10.90.6.0/24 fleet/library
root=/var/tmp/soniquebay-molecule/fleet/library
bash "$here/../shared/library.sh" "$root/a" "${FLEET_FILES_A:-1200}" 1
bash "$here/../shared/library.sh" "$root/b" "${FLEET_FILES_B:-600}" 2
bash "$here/../shared/library.sh" "$root/c" "${FLEET_FILES_C:-12000}" 3
