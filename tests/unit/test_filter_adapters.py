"""The Ansible filter plugins are thin adapters over the shadowdb package: the same functions
under the same filter names, their errors raised as AnsibleFilterError with the package's
message; and the package itself works without Ansible (the API)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

import shadowdb
from shadowdb import spec, tiers

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "filter_plugins"
# The filter names the playbooks and roles use, per plugin file: each is the package's function
# of the same name.
FILTERS = {
    "shadowdb.py": [
        "shadowdb_archive_queue_max_mb",
        "shadowdb_archive_settings",
        "shadowdb_backup_client_cn",
        "shadowdb_backup_enabled",
        "shadowdb_backup_layout",
        "shadowdb_backup_summary",
        "shadowdb_batch_refusals",
        "shadowdb_check_tenants",
        "shadowdb_clone_plan",
        "shadowdb_converged_record",
        "shadowdb_extension_packages",
        "shadowdb_ha_members",
        "shadowdb_ha_records",
        "shadowdb_os_user",
        "shadowdb_pg_settings",
        "shadowdb_registry_current",
        "shadowdb_registry_records",
        "shadowdb_restore_target",
        "shadowdb_tier",
        "shadowdb_tier_limits",
        "shadowdb_validate_settings",
        "shadowdb_validate_tenant",
        "shadowdb_validate_tenants",
    ],
    "shadowdb_placement.py": ["shadowdb_host_load", "shadowdb_placement"],
    "shadowdb_digest.py": ["shadowdb_fingerprint", "shadowdb_tree_digest"],
    "shadowdb_network.py": ["shadowdb_proxy_cidrs"],
}


def plugin_filters(filename: str) -> dict:
    """The filters of one plugin file, loaded by path as Ansible loads it."""
    module_spec = importlib.util.spec_from_file_location(f"_filters_{filename[:-3]}", PLUGINS / filename)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.FilterModule().filters()


@pytest.mark.parametrize("filename", sorted(FILTERS))
def test_each_filter_is_the_package_function(filename):
    filters = plugin_filters(filename)
    assert sorted(filters) == FILTERS[filename]
    for name, func in filters.items():
        assert func.__wrapped__ is getattr(shadowdb, name), name


@pytest.mark.parametrize(
    ("filename", "name", "args"),
    [
        ("shadowdb.py", "shadowdb_validate_tenant", ({"name": "acme", "replicas": 9},)),
        ("shadowdb.py", "shadowdb_validate_tenants", ([{"name": "acme"}, {"name": "acme"}],)),
        ("shadowdb.py", "shadowdb_tier", ("huge",)),
        ("shadowdb.py", "shadowdb_validate_settings", ({"port": 1},)),
        ("shadowdb.py", "shadowdb_os_user", ("Bad_Name",)),
        ("shadowdb.py", "shadowdb_extension_packages", (["nope"], 17)),
        ("shadowdb_placement.py", "shadowdb_placement", (["db1"], 2, "acme")),
        ("shadowdb_digest.py", "shadowdb_fingerprint", ({"a": {1, 2}},)),
        ("shadowdb_digest.py", "shadowdb_tree_digest", ("/nonexistent/shadowdb",)),
    ],
)
def test_errors_are_ansible_filter_errors_with_the_package_message(filename, name, args):
    with pytest.raises(ValueError) as package:
        getattr(shadowdb, name)(*args)
    with pytest.raises(AnsibleFilterError) as adapter:
        plugin_filters(filename)[name](*args)
    assert str(adapter.value) == str(package.value)
    assert str(adapter.value).startswith(("tenant", "shadowdb_"))


def test_filters_return_the_package_results():
    filters = plugin_filters("shadowdb.py")
    assert filters["shadowdb_validate_tenant"]({"name": "acme"}) == spec.shadowdb_validate_tenant(
        {"name": "acme"}
    )
    assert filters["shadowdb_tier"]("small", tiers={}) == tiers.shadowdb_tier("small")


def test_the_package_works_without_ansible(tmp_path):
    # A sitecustomize that makes 'import ansible' fail, as in an environment without Ansible.
    (tmp_path / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import sys
            class _NoAnsible:
                def find_spec(self, name, path=None, target=None):
                    if name == "ansible" or name.startswith("ansible."):
                        raise ImportError("no ansible here")
                    return None
            sys.meta_path.insert(0, _NoAnsible())
            """
        )
    )
    code = textwrap.dedent(
        """
        import json, sys
        import shadowdb
        try:
            shadowdb.shadowdb_validate_tenant({"name": "Bad_Name"})
        except ValueError as exc:
            error = {"field": exc.field, "message": str(exc), "type": type(exc).__name__}
        print(json.dumps({
            "error": error,
            "ansible_loaded": any(k == "ansible" or k.startswith("ansible.") for k in sys.modules),
            "tenant": shadowdb.shadowdb_validate_tenant({"name": "acme"}),
            "fingerprint": shadowdb.shadowdb_fingerprint({"a": 1}),
        }))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert not out["ansible_loaded"]
    assert out["error"]["type"] == "SpecError"
    assert out["error"]["field"] == "tenant.name"
    assert out["error"]["message"].startswith("tenant.name: 'Bad_Name' is not a valid tenant name")
    assert out["tenant"]["pg_version"] == 17
    assert out["fingerprint"] == shadowdb.shadowdb_fingerprint({"a": 1})


PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  vars:
    tenants:
      - name: acme
        tier: medium
        extensions: [vector, citext]
        settings:
          synchronous_commit: off   # YAML 1.1 boolean
          work_mem: 8MB
  tasks:
    - name: Render filter results
      ansible.builtin.copy:
        dest: "{{ out }}"
        content: >-
          {{ {'tenants': tenants | shadowdb_validate_tenants,
              'conf': tenants[0].tier
                      | shadowdb_pg_settings(tenants[0].settings, extensions=tenants[0].extensions),
              'packages': tenants[0].extensions | shadowdb_extension_packages(17),
              'user': tenants[0].name | shadowdb_os_user} | to_json }}
    - name: Reject a bad tenant
      ansible.builtin.debug:
        msg: "{{ [{'name': 'acme', 'replicas': 9}] | shadowdb_validate_tenants }}"
"""


@pytest.mark.skipif(
    shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) is None, reason="no ansible"
)
def test_filters_work_in_a_playbook(tmp_path):
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    out = tmp_path / "out.json"
    env = {
        **os.environ,
        "ANSIBLE_FILTER_PLUGINS": str(PLUGINS),
        "PYTHONPATH": str(ROOT),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
    }
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-e",
            f"out={out}",
            "play.yml",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    assert result["user"] == "pg-acme"
    assert result["packages"] == ["postgresql-17-pgvector"]
    assert result["tenants"][0]["settings"] == {"synchronous_commit": "off", "work_mem": "8MB"}
    assert result["conf"]["synchronous_commit"] == "off"
    assert result["conf"]["shared_buffers"] == "256MB"
    assert result["conf"]["shared_preload_libraries"] == "pg_stat_statements"
    # The second task fails with the SpecError message intact.
    assert proc.returncode != 0
    assert "tenant.replicas: 9 is out of range; use an integer from 0 to 4 (in tenants[0], name 'acme')" in (
        proc.stdout + proc.stderr
    )
