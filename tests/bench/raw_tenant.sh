#!/bin/sh
# The raw shell steps for one tenant, done by hand: the baseline the onboarding benchmark
# compares tenant.yml against (shared/LAB.md: ~0.9-1.5 s per tenant). Runs inside a lab host.
#   raw_tenant.sh NAME PORT [PROXY_PORT]
# With PROXY_PORT, on a host that is also an etcd member and a proxy host (a routing lab of one
# host), the tenant is registered and routed too, as tenant.yml does: its record put into etcd
# (under /shadowdb/raw/, not the registry's prefix) and an HAProxy fragment with its own port,
# then a reload (which checks the whole configuration first, as the unit's ExecReload does).
set -eu
name=$1 port=$2 proxy_port=${3:-}
bin=/usr/lib/postgresql/17/bin
img=/var/lib/shadowdb/raw/$name.img
mnt=/mnt/raw/$name
mkdir -p /var/lib/shadowdb/raw "$mnt"
truncate -s 1G "$img"
# Lab hosts have no udev: make the node of a loop device created after the host booted, before
# attaching, as the volume helper does (losetup prints "/dev/loopN (lost)" for a device without one).
attach() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        free=$(losetup -f | cut -d' ' -f1)
        [ -e "$free" ] || mknod -m 0660 "$free" b 7 "${free#/dev/loop}" 2>/dev/null || true
        losetup --find --show "$img" 2>/dev/null && return
    done
    losetup --find --show "$img"
}
dev=$(attach)
mkfs.ext4 -q -L "r$name" "$dev"
mount "$dev" "$mnt"
useradd --system --home-dir "$mnt" --shell /usr/sbin/nologin "raw-$name"
install -d -o "raw-$name" -m 0700 "$mnt/data" "$mnt/run"
chown "raw-$name" "$mnt"
echo "secret-$name" > "$mnt/pw"; chown "raw-$name" "$mnt/pw"
runuser -u "raw-$name" -- "$bin/initdb" -D "$mnt/data" --data-checksums --auth=scram-sha-256 \
    --username=postgres --pwfile="$mnt/pw" >/dev/null
rm "$mnt/pw"
cat >> "$mnt/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '*'
unix_socket_directories = '$mnt/run'
shared_buffers = '128MB'
max_connections = 50
CONF
cat > "/etc/systemd/system/raw-$name.service" <<UNIT
[Service]
Type=notify
User=raw-$name
ExecStart=$bin/postgres -D $mnt/data
UNIT
systemctl daemon-reload
systemctl start "raw-$name.service"
"$bin/pg_isready" -q -h "$mnt/run" -p "$port" -t 30

[ -n "$proxy_port" ] || exit 0
address=$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -n1)
# etcdctl is root's wrapper on a member (etcd's root user); TLS needs a certificate of the CA.
etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt \
    --cert=/etc/etcd/pki/member.crt --key=/etc/etcd/pki/member.key put "/shadowdb/raw/$name" \
    "{\"tenant\": \"$name\", \"host\": \"$(hostname)\", \"address\": \"$address\", \"port\": $port, \"proxy_port\": $proxy_port}" \
    >/dev/null
cat > "/etc/haproxy/conf.d/raw-$name.cfg" <<CFG
backend raw_$name
    server $name $address:$port check
frontend raw_f_$name
    bind :$proxy_port
    default_backend raw_$name
CFG
systemctl reload haproxy.service
