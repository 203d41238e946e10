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
true
