#!/usr/bin/env bash
# Make rootful podman usable on a Debian 12 CI/dev host (no systemd, cgroups v1
# hybrid, hard nofile 20000). Idempotent: safe to run any number of times.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "podman-setup.sh: must run as root" >&2; exit 1; }

# podman and its network stack; debootstrap for the image; ssh (Ansible reaches the containers over SSH);
# Debian's python3 with pip, which builds the wheelhouse for the hosts' own Python (worker_app role).
PKGS=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs netavark aardvark-dns catatonit openssh-client
      python3-pip python3-venv)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "podman-setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

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

# Smoke test: fails loudly here rather than deep inside Molecule.
podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} cgroups-{{.Host.CgroupsVersion}} {{.Host.NetworkBackend}}' \
    | sed 's/^/podman-setup: runtime, cgroup manager, cgroups, network: /'
podman --version
