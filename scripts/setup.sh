#!/usr/bin/env bash
# Set up everything ShadowDB needs on the controller; skip what is already present.
# Idempotent: safe to run before every demo and test.
set -euo pipefail
cd "$(dirname "$0")/.."

ANSIBLE_BUNDLE_VERSION=14.5.0   # PyPI "ansible": the collections below are copied out of it
COLLECTIONS="community/postgresql community/general ansible/posix community/crypto containers/podman"
# podman/runc/debootstrap: lab hosts; postgresql: the API's throwaway catalog (tests, demo);
# etcd-server/etcd-client: the registry module's tests against a real etcd.
# nftables: the tenant egress firewall's unit tests check the rendered ruleset with nft --check.
APT_PACKAGES="podman runc debootstrap uidmap postgresql etcd-server etcd-client nftables"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/shadowdb"
mkdir -p "$cache"

step() { printf '==> %s\n' "$*"; }

# 1. Debian packages
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    step "apt: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
else
    step "apt: present"
fi

# 2. venv from the newest Python >= 3.12 on the machine
find_python() {
    local c
    for c in python3.14 python3.13 python3.12; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys' >/dev/null 2>&1; then
            command -v "$c"; return
        fi
    done
    # pyenv installs that are not the active version are not reachable by their shim
    for c in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]* 2>/dev/null | sort -V -r); do
        [ -x "$c/bin/python3" ] && { echo "$c/bin/python3"; return; }
    done
    return 1
}
stamp=".venv/.shadowdb-deps-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    py=$(find_python) || { echo "error: no Python >= 3.12 found (needed by ansible-core 2.21)" >&2; exit 1; }
    step "venv: building with $py"
    [ -x .venv/bin/python ] || "$py" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    rm -f .venv/.shadowdb-deps-*
    touch "$stamp"
else
    step "venv: present"
fi

# 3. Ansible collections, copied out of PyPI's ansible bundle (there is no Galaxy here)
need=""
for c in $COLLECTIONS; do
    [ -f ".collections/ansible_collections/$c/MANIFEST.json" ] || need="$need $c"
done
if [ -n "$need" ]; then
    wheel=$(ls "$cache"/ansible-"$ANSIBLE_BUNDLE_VERSION"-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$wheel" ]; then
        step "collections: downloading ansible==$ANSIBLE_BUNDLE_VERSION (once)"
        .venv/bin/pip download -q --no-deps -d "$cache" "ansible==$ANSIBLE_BUNDLE_VERSION"
        wheel=$(ls "$cache"/ansible-"$ANSIBLE_BUNDLE_VERSION"-*.whl | head -1)
    fi
    step "collections: extracting$need"
    .venv/bin/python - "$wheel" .collections $need <<'PY'
import sys, zipfile
wheel, dest, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
prefixes = tuple(f"ansible_collections/{c}/" for c in wanted)
with zipfile.ZipFile(wheel) as zf:
    zf.extractall(dest, [n for n in zf.namelist() if n.startswith(prefixes)])
PY
else
    step "collections: present"
fi

# 4. Lab image (Debian trixie + systemd), built once and reused
bash scripts/build-lab-image.sh
