#!/usr/bin/env bash
# Run one molecule scenario: scripts/molecule.sh [scenario] (default: default).
# Called by `make molecule` and scripts/test.sh; returns molecule's exit code.
# SHADOWDB_MOLECULE_KEEP=1 keeps the instance after the run (molecule --destroy=never) to look
# around with `podman exec -it <id> bash`; the next run removes it first.
#
# Everything podman-global is named after this checkout (sdb-m-<hash of its path>), so two
# checkouts can run at once next to the operator's lab (sdb-lab-*) without touching each other.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scenario=${1:-default}
[ -f "molecule/$scenario/molecule.yml" ] || { echo "molecule.sh: no scenario molecule/$scenario" >&2; exit 2; }

export CONTAINERS_CONF="$root/lab/containers.conf"
export ANSIBLE_CONFIG="$root/ansible.cfg"
# The filter plugins import this checkout's shadowdb package (also when .venv is another's).
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$root/.venv/bin:$PATH"
SHADOWDB_MOLECULE_ID="sdb-m-${SHADOWDB_LAB_ID:-$(printf '%s\n' "$root" | sha1sum | cut -c1-6)}"
export SHADOWDB_MOLECULE_ID
# Downloaded .deb files of the lab (playbooks/lab.yml), mounted read-only as an overlay.
export SHADOWDB_APT_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/shadowdb/apt-archives"
mkdir -p "$SHADOWDB_APT_CACHE"
# Molecule's working files (inventory, state, the scenario's throwaway CA) stay in this
# checkout (git-ignored): molecule's default location is keyed by the directory's basename.
export MOLECULE_EPHEMERAL_DIRECTORY="$root/molecule/$scenario/.molecule"

# Instances of this checkout and scenario: scenario `default` names its one host <id>, any other
# scenario names its hosts <id>-<scenario>-<host>, so two scenarios can run side by side.
instances() {
    local pattern="^${SHADOWDB_MOLECULE_ID}-${scenario}-[a-z0-9-]+\$"
    [ "$scenario" = default ] && pattern="^${SHADOWDB_MOLECULE_ID}\$"
    podman ps -a --format '{{.Names}}' | grep -E "$pattern" || true
}

# Release the loop devices a host's tenants attached (they belong to the machine's kernel and
# outlive the container), then remove the host.
remove_instance() {
    local name=$1
    if [ "$(podman container inspect --format '{{.State.Running}}' "$name" 2>/dev/null)" = true ]; then
        podman exec "$name" /bin/sh -c '
            systemctl stop "shadowdb-*" 2>/dev/null
            for f in /var/lib/shadowdb/volumes/*.img; do
                [ -e "$f" ] && losetup -j "$f" | cut -d: -f1 | xargs -r -n1 losetup -d
            done; true' || true
    fi
    podman rm --force --ignore --time 10 "$name" >/dev/null
}

# Leftovers of an interrupted run of this checkout.
for name in $(instances); do
    echo "molecule.sh: removing stale instance $name"
    remove_instance "$name"
done
# Every run starts from nothing: a fresh state, inventory and throwaway CA.
rm -rf "$MOLECULE_EPHEMERAL_DIRECTORY"
mkdir -p "$MOLECULE_EPHEMERAL_DIRECTORY"

start=$(date +%s)
rc=0
destroy=always
[ "${SHADOWDB_MOLECULE_KEEP:-0}" = 1 ] && destroy=never
molecule test -s "$scenario" --destroy "$destroy" || rc=$?
echo "molecule.sh: scenario $scenario finished with rc=$rc in $(( $(date +%s) - start ))s"

# molecule test destroys its instances, unless it was stopped before its destroy step.
[ "$destroy" = never ] && { echo "molecule.sh: kept $(instances | tr '\n' ' ')"; exit "$rc"; }
for name in $(instances); do
    echo "molecule.sh: removing leftover instance $name"
    remove_instance "$name"
done
exit "$rc"
