#!/usr/bin/env bash
# Build the Molecule base image localhost/soniquebay-debian12:latest when it is
# absent (or was built from another recipe). No registry can be reached, so the
# image is a debootstrap rootfs of Debian 12 imported with systemd as its CMD.
#
# The packages the roles install are pre-installed so every converge only
# configures. Their apt state is exactly the one a real host has after
# `apt-get install` (packages installed, services enabled, cluster 15/main
# created): the roles still have to do all of their own work on top of it.
#
# Env:  SONIQUEBAY_IMAGE  image name (default localhost/soniquebay-debian12:latest)
#       FORCE=1           rebuild even when the image exists
#       SONIQUEBAY_CACHE  cache dir for .debs (default /var/cache/soniquebay)
set -euo pipefail

IMAGE=${SONIQUEBAY_IMAGE:-localhost/soniquebay-debian12:latest}
CACHE=${SONIQUEBAY_CACHE:-/var/cache/soniquebay}
SUITE=bookworm

# Part of debootstrap: what Molecule/Ansible need to manage the container.
BOOTSTRAP_PKGS=python3,systemd,systemd-sysv,dbus,procps,iproute2

# What the roles install (keep in sync with roles/*/tasks: apt names), plus
# the tools the verifiers use. Missing one only makes converge slower.
EXTRA_PKGS=(
    # roles/common (+ what Ansible needs: python3-apt for apt, acl/sudo to become another user)
    acl ca-certificates procps python3-apt sudo
    # roles/redis
    redis-server redis-tools
    # roles/postgresql
    postgresql-15 postgresql-client-15 python3-psycopg2
    # roles/worker_app, roles/supervisor
    python3-venv supervisor
    # the verifiers (curl: Flower), and a firewall a role may manage
    curl less logrotate nftables
    # Ansible reaches the containers over SSH (pipelining, multiplexing): 2-3x faster than podman exec
    openssh-server
)

[ "$(id -u)" = 0 ] || { echo "base-image.sh: must run as root" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
RECIPE=$(sha256sum "$HERE/base-image.sh" | cut -c1-16)

if [ "${FORCE:-0}" != 1 ] && podman image exists "$IMAGE"; then
    have=$(podman image inspect --format '{{index .Labels "soniquebay.recipe"}}' "$IMAGE" 2>/dev/null || true)
    if [ "$have" = "$RECIPE" ]; then
        echo "base-image: $IMAGE present (recipe $RECIPE), nothing to do"
        exit 0
    fi
    echo "base-image: $IMAGE was built from recipe '${have:-?}', rebuilding for $RECIPE"
fi

# The host's Debian mirror (deb822 .sources first, then one-line lists).
mirror=""; security=""
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    while read -r uri; do
        case "$uri" in
            *debian-security*) [ -n "$security" ] || security=$uri ;;
            *debian*)          [ -n "$mirror" ]   || mirror=$uri ;;
        esac
    done < <(awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' "$f")
done
if [ -z "$mirror" ]; then
    mirror=$(grep -hsE '^deb\s+\S*debian/?\s+bookworm\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
             | awk '{print $2}' | head -1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
security=${security:-${mirror%/debian}/debian-security}
echo "base-image: mirror $mirror, security $security"

mkdir -p "$CACHE/debs"
WORK=$(mktemp -d /var/tmp/soniquebay-rootfs.XXXXXX)
ROOT=$WORK/rootfs
cleanup() {
    for m in dev/pts dev proc sys var/cache/apt/archives; do
        mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m" || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

t0=$(date +%s)
# The debootstrap stage is cached as a tarball (keyed by its inputs, renewed weekly; the apt stage
# below brings it up to date anyway). CI on a fresh machine builds it; a developer's rebuild skips it.
NODOC='path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias'
key=$(printf '%s\n' "$SUITE" "$mirror" "$BOOTSTRAP_PKGS" "$NODOC" "$(date +%G-%V)" | sha256sum | cut -c1-12)
STAGE=$CACHE/debootstrap-$SUITE-$key.tar
mkdir -p "$ROOT"
if [ -s "$STAGE" ]; then
    tar --numeric-owner --xattrs -C "$ROOT" -xf "$STAGE"
    echo "base-image: debootstrap stage from $STAGE ($(( $(date +%s) - t0 )) s)"
else
    # dpkg excludes first, so debootstrap's own packages skip docs too.
    mkdir -p "$ROOT/etc/dpkg/dpkg.cfg.d"
    printf '%s\n' "$NODOC" > "$ROOT/etc/dpkg/dpkg.cfg.d/01-soniquebay-nodoc"
    debootstrap --variant=minbase --include="$BOOTSTRAP_PKGS" --cache-dir="$CACHE/debs" \
        "$SUITE" "$ROOT" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -40 "$WORK/debootstrap.log"; exit 1; }
    rm -f "$ROOT"/var/cache/apt/archives/*.deb
    rm -f "$CACHE"/debootstrap-"$SUITE"-*.tar
    tar --numeric-owner --xattrs -C "$ROOT" -cf "$STAGE.tmp" . && mv "$STAGE.tmp" "$STAGE"
    echo "base-image: debootstrap $(( $(date +%s) - t0 )) s (stage cached in $STAGE)"
fi
t1=$(date +%s)

cat > "$ROOT/etc/apt/sources.list" <<EOF
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
deb $security $SUITE-security main
EOF
# Keep apt lean and non-interactive inside the containers too.
cat > "$ROOT/etc/apt/apt.conf.d/90soniquebay" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
EOF
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"

mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
mount --bind "$CACHE/debs" "$ROOT/var/cache/apt/archives"
in_root() { LANG=C.UTF-8 LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$ROOT" "$@"; }

in_root apt-get update -qq
in_root apt-get -y -qq -o Dpkg::Use-Pty=0 dist-upgrade > "$WORK/apt.log" 2>&1 \
    || { tail -40 "$WORK/apt.log"; exit 1; }
in_root apt-get -y -qq -o Dpkg::Use-Pty=0 --download-only install "${EXTRA_PKGS[@]}" >> "$WORK/apt.log" 2>&1 \
    || { tail -40 "$WORK/apt.log"; exit 1; }
# Installed offline in a network namespace of its own: maintainer scripts must not see the build
# host's services (pg_createcluster would pick port 5433 when the host runs a PostgreSQL on 5432).
LANG=C.UTF-8 LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive unshare --net chroot "$ROOT" \
    apt-get -y -qq -o Dpkg::Use-Pty=0 --no-download install "${EXTRA_PKGS[@]}" >> "$WORK/apt.log" 2>&1 \
    || { tail -40 "$WORK/apt.log"; exit 1; }
grep -q '^port = 5432' "$ROOT/etc/postgresql/15/main/postgresql.conf" \
    || { echo "base-image: cluster 15/main is not on port 5432" >&2; exit 1; }
t2=$(date +%s)
echo "base-image: apt install $((t2 - t1)) s"

# The containers trust what the host trusts: where outbound HTTPS goes through
# a TLS-inspecting proxy (CI here), pip inside a container needs its CA too.
if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    in_root update-ca-certificates > /dev/null 2>&1
fi

# Container hygiene: no timers that grab the dpkg lock during a converge,
# no units that cannot work in a container, a fresh machine-id per container.
for u in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer \
         systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service \
         sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
         systemd-remount-fs.service getty.target console-getty.service; do
    in_root systemctl mask "$u" >/dev/null 2>&1 || true
done
# sshd: each container makes its own host keys at boot; root logs in with a key only (the key is
# bind-mounted by the scenarios, never baked into the image).
rm -f "$ROOT"/etc/ssh/ssh_host_*
mkdir -p "$ROOT/etc/systemd/system/ssh.service.d"
cat > "$ROOT/etc/systemd/system/ssh.service.d/10-soniquebay-host-keys.conf" <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
cat > "$ROOT/etc/ssh/sshd_config.d/10-soniquebay.conf" <<'SSHD'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
MaxSessions 50
MaxStartups 50:30:100
SSHD
echo 'LANG=C.UTF-8' > "$ROOT/etc/default/locale"
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT/etc/hostname" "$ROOT/usr/sbin/policy-rc.d"
# A real host's apt lists are kept, so `apt: update_cache` is quick.
# Unmount the shared .deb cache first: `apt-get clean` must not empty it.
for m in var/cache/apt/archives dev/pts dev proc; do umount "$ROOT/$m"; done
chroot "$ROOT" apt-get clean
umount -R "$ROOT/sys"
rm -rf "$ROOT"/tmp/* "$ROOT"/var/tmp/* "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/*

old_id=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
tar --numeric-owner --xattrs -C "$ROOT" -c . | podman import \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change 'ENV container=podman' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    --change "LABEL soniquebay.recipe=$RECIPE" \
    --message "SoniqueBay Molecule base, Debian 12, recipe $RECIPE" \
    - "$IMAGE" > /dev/null 2>&1
t3=$(date +%s)
echo "base-image: import $((t3 - t2)) s; total $((t3 - t0)) s"
if [ -n "$old_id" ] && [ "$old_id" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    podman rmi "$old_id" > /dev/null 2>&1 || echo "base-image: previous image $old_id still in use, left in place"
fi
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}} {{.Created}}' "$IMAGE"
