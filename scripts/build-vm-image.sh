#!/usr/bin/env bash
# Build the VM lab's db-host image (Debian + systemd + kernel + sshd) once; reuse it while it
# exists. No loop device and no mount: debootstrap into a directory, `mkfs.ext4 -d` that
# directory into a raw file, `qemu-img convert` it to qcow2 (docs/vm-lab.md). The kernel and
# initramfs are copied out beside the image: qemu boots them with -kernel/-initrd (no bootloader).
#
#   SHADOWDB_VM_CACHE   where the image, kernel, initrd and controller SSH key live
#                       (default: $XDG_CACHE_HOME/shadowdb/vm or ~/.cache/shadowdb/vm, shared by every checkout on the machine)
#   SHADOWDB_VM_SUITE   Debian suite (default trixie)
#   SHADOWDB_VM_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   SHADOWDB_VM_IMAGE_SIZE  virtual size of the root disk (default 4G)
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${SHADOWDB_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shadowdb/vm}"
suite="${SHADOWDB_VM_SUITE:-trixie}"
mirror="${SHADOWDB_VM_MIRROR:-http://deb.debian.org/debian}"
size="${SHADOWDB_VM_IMAGE_SIZE:-4G}"
# Bump when the recipe below changes: a new name means a new image, the old one stays usable.
name="shadowdb-vm-$suite-1"
image="$cache/$name.qcow2"

if [ -f "$image" ] && [ -f "$cache/$name.vmlinuz" ] && [ -f "$cache/$name.initrd" ]; then
    echo "vm image $image: present"
    exit 0
fi
mkdir -p "$cache"
chmod 0700 "$cache"
# One build at a time (two would write the same files); the second finds the image built.
exec 9>"$cache/.build.lock"
flock 9
if [ -f "$image" ] && [ -f "$cache/$name.vmlinuz" ] && [ -f "$cache/$name.initrd" ]; then
    echo "vm image $image: present"
    exit 0
fi
# The controller's key for every lab VM (never committed: the cache is outside git's view).
[ -f "$cache/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C shadowdb-vm-lab -f "$cache/id_ed25519"

start=$(date +%s)
root=$(mktemp -d /var/tmp/shadowdb-vm-rootfs.XXXXXX)
raw="$cache/$name.raw.tmp"
trap 'rm -rf "$root" "$raw" "$image.tmp"' EXIT
# The lab image's packages, plus what a real host boots with (kernel, udev, sshd) and what the
# host role installs (roles/host/vars/main.yml, PostgreSQL 17 and the default extension packages):
# installing them here runs natively, in the guest it runs under TCG at a fraction of the speed.
packages="systemd,systemd-sysv,dbus,python3,iproute2,ca-certificates,procps"
packages="$packages,udev,kmod,linux-image-amd64,initramfs-tools,zstd,openssh-server,python3-apt"
# debootstrap does not resolve virtual packages: python3-cryptography needs python3-cffi-backend named.
packages="$packages,python3-psycopg,python3-cryptography,python3-cffi-backend,e2fsprogs,util-linux,nftables"
packages="$packages,postgresql-17,postgresql-17-pgvector"
echo "vm image $image: debootstrap $suite (a few minutes)"
nice -n 19 debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >/dev/null \
    || { tail -n 30 "$root/debootstrap/debootstrap.log" >&2; exit 1; }

cat >"$root/etc/fstab" <<'EOF'
/dev/vda  /  ext4  errors=remount-ro  0  1
EOF
# Static address of qemu's user-mode network (guest 10.0.2.15, gateway .2, DNS .3); the kernel
# command line sets net.ifnames=0 so the one NIC is eth0. No DHCP client needed.
cat >"$root/etc/systemd/system/shadowdb-net.service" <<'EOF'
[Unit]
Description=ShadowDB VM lab: user-mode network address
Before=network.target ssh.service
Wants=network.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/ip link set lo up
ExecStart=/usr/sbin/ip link set eth0 up
ExecStart=/usr/sbin/ip address replace 10.0.2.15/24 dev eth0
ExecStart=/usr/sbin/ip route replace default via 10.0.2.2
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/shadowdb-net.service \
    "$root/etc/systemd/system/multi-user.target.wants/shadowdb-net.service"
rm -f "$root/etc/resolv.conf"
echo "nameserver 10.0.2.3" >"$root/etc/resolv.conf"
# Host keys made at first boot, so VMs of one image do not share them.
rm -f "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/systemd/system/shadowdb-ssh-keygen.service" <<'EOF'
[Unit]
Description=ShadowDB VM lab: SSH host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target ssh.service
EOF
ln -sf /etc/systemd/system/shadowdb-ssh-keygen.service \
    "$root/etc/systemd/system/multi-user.target.wants/shadowdb-ssh-keygen.service"
mkdir -p "$root/etc/systemd/system/ssh.service.wants"
ln -sf /etc/systemd/system/shadowdb-ssh-keygen.service \
    "$root/etc/systemd/system/ssh.service.wants/shadowdb-ssh-keygen.service"
cat >"$root/etc/ssh/sshd_config.d/shadowdb.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$cache/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
# Each VM makes its own machine id on first boot.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# Headless; no periodic apt runs racing the host role's apt.
for unit in getty.target apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# Debian's default "main" cluster is not wanted (roles/host says the same); drop the one the
# package made at install time.
mkdir -p "$root/etc/postgresql-common/createcluster.d"
printf '# Managed by ShadowDB: every cluster on this host belongs to a tenant.\ncreate_main_cluster = false\n' \
    >"$root/etc/postgresql-common/createcluster.d/50-shadowdb.conf"
chroot "$root" sh -c 'pg_lsclusters -h | while read v c _; do pg_dropcluster --stop "$v" "$c"; done' || true
cp "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)" "$cache/$name.vmlinuz.tmp"
cp "$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)" "$cache/$name.initrd.tmp"
rm -rf "$root"/var/cache/apt/archives/*.deb
echo "vm image $image: mkfs.ext4 -d, qemu-img convert"
truncate -s "$size" "$raw"
nice -n 19 mkfs.ext4 -q -F -L sdb-root -d "$root" "$raw"
nice -n 19 qemu-img convert -f raw -O qcow2 "$raw" "$image.tmp"
mv "$cache/$name.vmlinuz.tmp" "$cache/$name.vmlinuz"
mv "$cache/$name.initrd.tmp" "$cache/$name.initrd"
mv "$image.tmp" "$image"
echo "vm image $image: built in $(($(date +%s) - start)) s ($(du -h "$image" | cut -f1))"
