#!/usr/bin/env bash
# The demo: lab hosts up, two tenants onboarded through tenant.yml (the API's entry point),
# connected to, and their connection strings printed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export CONTAINERS_CONF="$PWD/lab/containers.conf" ANSIBLE_CONFIG="$PWD/ansible.cfg"
# The filter plugins import this checkout's shadowdb package (also when .venv is another's).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
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

# --- The API: a third tenant onboarded through POST /v1/tenants, its job followed live (SSE) ---
api_dir=/var/tmp/shadowdb-demo-api-$lab
api_port=${SHADOWDB_DEMO_API_PORT:-18080}
echo "==> API: catalog (a throwaway PostgreSQL in $api_dir), service on 127.0.0.1:$api_port"
python3 -m api devdb start --dir "$api_dir" >/dev/null
SHADOWDB_API_DATABASE_URL=$(python3 -m api devdb url --dir "$api_dir")
export SHADOWDB_API_DATABASE_URL SHADOWDB_API_INVENTORY="$PWD/$inventory" SHADOWDB_API_SNI_PORT=5432
python3 -m api serve --port "$api_port" > "$work/api.log" 2>&1 &
api_pid=$!
trap 'kill $api_pid 2>/dev/null; python3 -m api devdb stop --dir "$api_dir" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 60); do
    curl -sf "http://127.0.0.1:$api_port/healthz" >/dev/null && break
    sleep 0.5
done
SHADOWDB_API_TOKEN=$(python3 -m api create-token --scope admin --name demo 2>/dev/null)
export SHADOWDB_API_TOKEN
python3 -m api onboard --url "http://127.0.0.1:$api_port" '{"name": "initech", "tier": "small"}' \
    --passfile "$PWD/$work/initech.pgpass" --hostaddr "$(python3 -c 'import sys; sys.path.insert(0, "scripts"); import demo_connect; print(demo_connect.host_address(sys.argv[1]))' "$host")" \
    --sslrootcert "$PWD/$inventory/pki/ca.crt"
python3 scripts/demo_connect.py --inventory "$inventory" --work "$work" --host "$host" initech
