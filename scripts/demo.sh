#!/usr/bin/env bash
# The demo: lab hosts up, two tenants onboarded through tenant.yml (the API's entry point),
# connected to, and their connection strings printed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export CONTAINERS_CONF="$PWD/lab/containers.conf" ANSIBLE_CONFIG="$PWD/ansible.cfg"
lab=${SHADOWDB_LAB:-sdb-lab}
export SHADOWDB_LAB=$lab
inventory=inventories/lab
# Logs and passfiles live outside the inventory directory (every file there is an inventory source).
work=.cache/demo
mkdir -p "$work"

echo "==> lab: 1 host ($lab), which is also the registry (etcd) and the proxy (HAProxy)"
ansible-playbook playbooks/lab.yml -e lab_hosts=1 -e lab_routing=true \
    -e lab_inventory_dir="$PWD/$inventory" >/dev/null
host="$lab-db1"
echo "==> routing: etcd and HAProxy"
ansible-playbook -i "$inventory" playbooks/routing.yml > "$work/routing.log" 2>&1 \
    || { tail -n 30 "$work/routing.log"; echo "routing failed" >&2; exit 1; }

onboard() {
    local spec=$1 name
    name=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["name"])' "$spec")
    echo "==> tenant $name: onboarding on $host"
    local t0=$SECONDS
    ansible-playbook -i "$inventory" playbooks/tenant.yml -e tenant_host="$host" \
        -e "{\"tenant\": $spec}" > "$work/onboard-$name.log" 2>&1 \
        || { tail -n 30 "$work/onboard-$name.log"; echo "onboarding $name failed" >&2; exit 1; }
    echo "    done in $((SECONDS - t0)) s ($(grep -E "^$host" "$work/onboard-$name.log" | sed 's/  */ /g'))"
}
onboard '{"name": "acme", "tier": "small", "extensions": ["pgcrypto"]}'
onboard '{"name": "globex", "tier": "medium", "extensions": ["vector"], "readonly_role": true}'

echo "==> connecting"
python3 scripts/demo_connect.py --inventory "$inventory" --work "$work" --host "$host" acme globex
