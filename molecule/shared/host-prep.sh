#!/usr/bin/env bash
# Host-side preparation shared by every scenario (their `dependency` step):
# the SSH key Ansible logs into the containers with (bind-mounted into each as
# /root/.ssh/authorized_keys), the scenario's podman network with a fixed
# subnet (the containers get fixed addresses, like the hosts of inventory/prod;
# the podman driver's schema has no subnet key), and its folders under $BASE.
#   molecule/shared/host-prep.sh NETWORK SUBNET [FOLDER...]   (folders relative to $BASE)
set -euo pipefail
network=$1 subnet=$2
shift 2
BASE=/var/tmp/soniquebay-molecule
mkdir -p "$BASE/ssh"
chmod 0700 "$BASE/ssh"
exec 9> "$BASE/ssh/.lock"
flock 9   # scenarios run in parallel
if [ ! -s "$BASE/ssh/id_ed25519" ]; then
    ssh-keygen -q -t ed25519 -N '' -C soniquebay-molecule -f "$BASE/ssh/id_ed25519.new"
    mv "$BASE/ssh/id_ed25519.new.pub" "$BASE/ssh/id_ed25519.pub"
    mv "$BASE/ssh/id_ed25519.new" "$BASE/ssh/id_ed25519"
fi
cmp -s "$BASE/ssh/id_ed25519.pub" "$BASE/ssh/authorized_keys" \
    || install -m 0644 "$BASE/ssh/id_ed25519.pub" "$BASE/ssh/authorized_keys"
have=$(podman network inspect --format '{{range .Subnets}}{{.Subnet}} {{end}}' "$network" 2>/dev/null || true)
if [ "${have% }" != "$subnet" ]; then
    [ -z "$have" ] || podman network rm "$network" > /dev/null
    podman network create --subnet "$subnet" "$network" > /dev/null
fi
for folder in "$@"; do
    mkdir -p "$BASE/$folder"
done
