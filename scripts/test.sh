#!/usr/bin/env bash
# The test suite, as CI runs it: lint, unit tests, molecule, integration tests on lab hosts and
# the VM tests on a qemu db host.
# Every stage must pass; a stage that runs no test fails (pytest exit code 5 is not hidden).
#
# The stages run in four streams at once, each on labs of its own names: most of a lab stage
# is waiting (systemd, PostgreSQL, Patroni's loop, failover timeouts), so the streams share the
# machine's cores well. Every line is prefixed with its stream; a stream stops at its first
# failing stage, the others run to their end, and the script fails if any stream failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export CONTAINERS_CONF="$PWD/lab/containers.conf" ANSIBLE_CONFIG="$PWD/ansible.cfg"
# The filter plugins import this checkout's shadowdb package (also when .venv is another's).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 PYTHONUNBUFFERED=1

start=$SECONDS
stage() { printf '\n==> [%4ss] %s\n' "$((SECONDS - start))" "$*"; }

# Stream "ha": the longest, started first.
stream_ha() {
	stage "HA on HA labs: lifecycle (replicas removed, tenant removed), standalone <-> HA conversion, HA through the API"
	pytest tests/ha -q --durations=5
}

stream_lab() {
	stage "integration tests on lab hosts"
	pytest tests/integration -q --durations=15
}

# Stream "vm": a db host as a qemu VM (TCG here: most of it is the guest's emulated CPU), with a
# virtual disk per tenant; the tier's limits enforced, a reboot and a hard kill (docs/vm-lab.md).
# Then the API end to end on a lab host of its own: the VM is gone by then, and this stream ends
# first otherwise (the lab stream, where it ran before, was the longest).
stream_vm() {
	stage "VM lab: qemu and the db-host image (built once per machine, then reused)"
	bash scripts/vm-setup.sh
	stage "VM db host: a disk per tenant, limits enforced, disk growth, detach/attach, reboot, hard kill"
	pytest tests/vm -q -s --durations=10
	stage "API end to end on a lab host"
	# -s: the scale-out test prints its figures (batches, engine overhead per job) into the log.
	pytest tests/api -m lab -q -s --durations=5
}

stream_main() {
	stage "lint: ruff"
	ruff check .
	ruff format --check .
	stage "lint: ansible-lint (production profile)"
	ansible-lint -q
	stage "unit tests (filters, modules, registry on a real etcd) and API tests on a real catalog"
	pytest tests/unit tests/api -m "not lab" -q
	stage "molecule: default scenario (converge, idempotence, verify)"
	bash scripts/molecule.sh default
	stage "molecule: routing scenario (db host + etcd/HAProxy host: SNI, per-tenant ports, fourth tenant, idempotence)"
	bash scripts/molecule.sh routing
	stage "routing on a lab host (SNI and per-tenant ports through HAProxy, registry in etcd, faults)"
	pytest tests/routing -q
}

# Each stream's output is also kept alone, for the digest of a failed stream at the end.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# Why a stream failed, in a few lines at the very end of the output (CI keeps only its tail): the
# stage it was in, pytest's failed tests and the first lines of their errors, or else its last lines.
digest() {
	local log=$logs/$1.log
	echo "--- $1 failed in:$(grep '^==> ' "$log" | tail -n 1 | cut -d']' -f2-)"
	if grep -qE '^(FAILED|ERROR) ' "$log"; then
		grep -E '^(FAILED|ERROR) ' "$log" | tail -n 3
		grep -E '^E  ' "$log" | head -n 4
	else
		tail -n 6 "$log"
	fi | cut -c1-240
}

streams=(ha vm lab main)
declare -A stream_of_pid
for name in "${streams[@]}"; do
	{ "stream_$name" 2>&1 | tee "$logs/$name.log" | sed -u "s/^/[$name] /"; } &
	stream_of_pid[$!]=$name
done

failed=()
for _ in "${streams[@]}"; do
	rc=0
	wait -n -p pid || rc=$?
	name=${stream_of_pid[$pid]}
	if ((rc == 0)); then
		stage "stream $name passed"
	else
		stage "stream $name FAILED (exit $rc)"
		failed+=("$name")
	fi
done
if ((${#failed[@]})); then
	for name in "${failed[@]}"; do
		digest "$name"
	done
	stage "failed: ${failed[*]}"
	exit 1
fi
stage "all stages passed"
