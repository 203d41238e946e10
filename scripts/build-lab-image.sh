#!/usr/bin/env bash
# Build the lab host image (Debian + systemd) once; reuse it while it exists.
set -euo pipefail
image="${SHADOWDB_LAB_IMAGE:-localhost/shadowdb-lab:trixie-1}"
suite="${SHADOWDB_LAB_SUITE:-trixie}"
mirror="${SHADOWDB_LAB_MIRROR:-http://deb.debian.org/debian}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(dirname "$0")/../lab/containers.conf}"

if podman image exists "$image"; then
    echo "lab image $image: present"
    exit 0
fi
root=$(mktemp -d /var/tmp/shadowdb-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "lab image $image: debootstrap $suite (about a minute)"
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,iproute2,ca-certificates,procps \
    "$suite" "$root" "$mirror" >/dev/null
# systemd-modules-load cannot work in a container and would mark the host degraded.
ln -sf /dev/null "$root/etc/systemd/system/systemd-modules-load.service"
# No getty on a headless lab host.
ln -sf /dev/null "$root/etc/systemd/system/getty.target"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | podman import --change 'CMD ["/sbin/init"]' - "$image" >/dev/null
echo "lab image $image: built"
