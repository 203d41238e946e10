# ShadowDB entry points. `make demo` and `make test` set up everything they need first.
SHELL := /bin/bash
export CONTAINERS_CONF := $(CURDIR)/lab/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# The shadowdb package of this checkout, also when .venv is another checkout's (a symlink).
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
# Lab name: containers, network and inventory are all named after it.
LAB ?= sdb-lab
LAB_HOSTS ?= 1
LAB_ROUTING ?= true
export SHADOWDB_LAB := $(LAB)

.PHONY: setup demo test lint unit integration molecule bench density lab-up lab-down clean
.PHONY: vm-setup vm-lab-up vm-lab-down vm-test vm-bench

setup:
	@bash scripts/setup.sh

lab-up: setup
	ansible-playbook playbooks/lab.yml -e lab_hosts=$(LAB_HOSTS) -e lab_routing=$(LAB_ROUTING)
	ansible-playbook playbooks/routing.yml

lab-down: setup
	ansible-playbook playbooks/lab.yml -e lab_state=absent

# The VM lab (docs/vm-lab.md): db hosts as qemu VMs (TCG where KVM does not work), a virtual disk
# per tenant. Needs about 1.5 GB of memory per VM and minutes per boot; not part of `make test`.
VM_LAB ?= sdb-vm
VM_LAB_HOSTS ?= 1
VM_INVENTORY := inventories/vmlab

vm-setup: setup
	@bash scripts/vm-setup.sh

vm-lab-up: vm-setup
	SHADOWDB_VM_LAB=$(VM_LAB) ansible-playbook playbooks/vm_lab.yml -e vm_lab_hosts=$(VM_LAB_HOSTS)
	ansible-playbook -i $(VM_INVENTORY) playbooks/provision.yml
	ansible-playbook -i $(VM_INVENTORY) playbooks/site.yml

vm-lab-down: setup
	-ansible-playbook -i $(VM_INVENTORY) playbooks/provision.yml -e vm_state=absent
	ansible-playbook playbooks/vm_lab.yml -e vm_lab_state=absent

# Its own VM (sdb-vmt-<checkout>-db1, SSH on a free port) and inventory: leaves the VM lab above
# alone. `make test` runs the same module in a stream of its own.
vm-test: vm-setup
	pytest tests/vm -q -s --durations=10

# The noisy neighbour's p99 on a VM db host (its own VM, about 10 minutes under TCG).
vm-bench: vm-setup
	pytest tests/bench -q -s -m vm

demo: setup
	@bash scripts/demo.sh

lint: setup
	ruff check .
	ruff format --check .
	ansible-lint

unit: setup
	pytest tests/unit tests/api -m "not lab" -q

integration: setup
	pytest tests/integration -q
	pytest tests/routing -q
	pytest tests/api -m lab -q

# Every scenario: default (one host, three tenants), routing (db host + etcd/HAProxy host),
# ha (Patroni on 3 db hosts + an etcd/HAProxy host, failover faults; not in `make test` yet).
molecule: setup
	@bash scripts/molecule.sh default
	@bash scripts/molecule.sh routing
	@bash scripts/molecule.sh ha

test: setup
	@bash scripts/test.sh

bench: setup
	pytest tests/bench -q -s -m "not density and not vm"

# Small tenants onto one lab host up to SHADOWDB_DENSITY_N (300); about an hour.
density: setup
	pytest tests/bench/test_density.py -q -s -m density

clean: lab-down
	rm -rf .pytest_cache .ruff_cache
