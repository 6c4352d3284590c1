#!/usr/bin/env bash
# Make rootful podman usable on a Debian 12 CI/dev host (no systemd, cgroups v1
# hybrid, hard nofile 20000). Idempotent: safe to run any number of times.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "podman-setup.sh: must run as root" >&2; exit 1; }

# podman and everything it runs (conmon, runc, netavark and the iptables it calls, aardvark-dns...), debootstrap
# for the image, the SSH client Ansible reaches the containers with, Debian's python3 with pip for the wheelhouse:
# the `podman` group of ci/host-commands.tsv, each with the reason it is needed.
HERE=$(cd "$(dirname "$0")" && pwd)
bash "$HERE/host-commands.sh" install --with-recommends podman
bash "$HERE/host-commands.sh" check base podman

# crun cannot run in cgroups v1 hybrid mode here; the default ulimits need
# CAP_SYS_RESOURCE the shell does not have; journald is not running on the host.
CONF=/etc/containers/containers.conf
WANT='# Managed by SoniqueBay ci/podman-setup.sh
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
'
mkdir -p /etc/containers
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$(printf '%s' "$WANT")" ]; then
    if [ -f "$CONF" ] && ! grep -q 'Managed by SoniqueBay' "$CONF"; then
        cp -a "$CONF" "$CONF.orig.$(date +%s)"
    fi
    printf '%s' "$WANT" > "$CONF"
    echo "podman-setup: wrote $CONF"
fi

# Smoke test: fails loudly here, in seconds, rather than deep inside Molecule. A container joins a user network
# (netavark sets up its firewall rules with iptables) and finds another one by name (aardvark-dns), as the
# scenarios' containers do. The image is made of a few of the host's own binaries: no registry is needed.
podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} cgroups-{{.Host.CgroupsVersion}} {{.Host.NetworkBackend}}' \
    | sed 's/^/podman-setup: runtime, cgroup manager, cgroups, network: /'
podman --version
SMOKE_IMAGE=localhost/soniquebay-smoke:1 SMOKE_NET=soniquebay-smoke SMOKE_PEER=soniquebay-smoke-peer
smoke_cleanup() {
    podman rm -f -t 0 "$SMOKE_PEER" > /dev/null 2>&1 || true
    podman network rm -f "$SMOKE_NET" > /dev/null 2>&1 || true
}
smoke_fail() {
    echo "podman-setup: FAILED: $1" >&2
    echo "podman-setup: check the podman group with: bash ci/host-commands.sh check podman" >&2
    smoke_cleanup
    exit 1
}
if ! podman image exists "$SMOKE_IMAGE"; then
    rootfs=$(mktemp -d /var/tmp/soniquebay-smoke.XXXXXX)
    for binary in /bin/sh /bin/sleep /usr/bin/getent; do
        for file in "$binary" $(ldd "$binary" | grep -o '/[^ ]*'); do
            cp --parents -L "$file" "$rootfs/"
        done
    done
    out=$(tar -C "$rootfs" -c . | podman import - "$SMOKE_IMAGE" 2>&1) || smoke_fail "podman import of the smoke image: $out"
    rm -rf "$rootfs"
fi
smoke_cleanup
podman network create "$SMOKE_NET" > /dev/null || smoke_fail "podman network create $SMOKE_NET"
out=$(podman run -d --name "$SMOKE_PEER" --network "$SMOKE_NET" "$SMOKE_IMAGE" /bin/sleep 60 2>&1) \
    || smoke_fail "a container cannot join a podman network: $out"
out=$(podman run --rm --network "$SMOKE_NET" "$SMOKE_IMAGE" /usr/bin/getent hosts "$SMOKE_PEER" 2>&1) \
    || smoke_fail "a container on a podman network cannot resolve another one by name (aardvark-dns): $out"
echo "podman-setup: a container on network $SMOKE_NET resolves its peer: ${out%% *}"
smoke_cleanup
