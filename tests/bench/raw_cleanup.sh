#!/bin/sh
# Remove what raw_tenant.sh made, inside a lab host.
for unit in $(systemctl list-units --plain --no-legend 'raw-*.service' | cut -d' ' -f1); do
    systemctl stop "$unit"; rm -f "/etc/systemd/system/$unit"
done
systemctl daemon-reload
for mnt in /mnt/raw/*; do [ -d "$mnt" ] && { umount "$mnt" 2>/dev/null; rm -rf "$mnt"; }; done
for img in /var/lib/shadowdb/raw/*.img; do
    [ -e "$img" ] || continue
    losetup -j "$img" | cut -d: -f1 | xargs -r -n1 losetup -d
    rm -f "$img"
done
for user in $(getent passwd | cut -d: -f1 | grep '^raw-'); do userdel "$user"; done
# What raw_tenant.sh registered and routed (with a proxy port).
if ls /etc/haproxy/conf.d/raw-*.cfg >/dev/null 2>&1; then
    rm -f /etc/haproxy/conf.d/raw-*.cfg
    systemctl reload haproxy.service
fi
if [ -r /etc/etcd/pki/member.key ]; then
    etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt \
        --cert=/etc/etcd/pki/member.crt --key=/etc/etcd/pki/member.key del --prefix /shadowdb/raw/ >/dev/null
fi
true
