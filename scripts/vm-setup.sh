#!/usr/bin/env bash
# Set up what the VM lab needs on top of `make setup` (docs/vm-lab.md): qemu and the db-host
# image. Kept out of scripts/setup.sh so that `make setup` does not slow down for everyone.
# Idempotent: installs what is missing, builds the image once.
set -euo pipefail
cd "$(dirname "$0")/.."

# qemu-system-x86/qemu-utils: the VMs and their overlays; debootstrap: the image;
# openssh-client: ssh-keygen (the controller's key) and ssh-keyscan (the guests' host keys).
APT_PACKAGES="qemu-system-x86 qemu-utils debootstrap openssh-client"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    echo "==> apt: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    echo "==> apt (vm lab): present"
fi
bash scripts/build-vm-image.sh
