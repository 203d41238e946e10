#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module (role haproxy): apply a set of configuration files only if the whole set validates."""

import fcntl
import fnmatch
import os
import shutil
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_common import ensure_dir, read_text, write_atomic

DOCUMENTATION = r"""
---
module: shadowdb_haproxy_config
short_description: Replace a set of configuration files only after the whole candidate set validates
description:
  - Takes the complete wanted content of a configuration directory (for HAProxy, the main file, the
    maps and one fragment per tenant) in one call, so the cost does not grow with the number of files.
  - When anything differs from the live files, writes the whole candidate set into a fresh temporary
    directory inside O(dest), runs O(validate) on it, and only if that succeeds replaces the changed
    live files (each atomically) and deletes live files matched by O(prune) that are not in O(files).
  - When validation fails the module fails with the validator's output and the live files are left
    untouched.
options:
  files:
    description:
      - Wanted files, as a dict of path relative to O(dest) to full content.
      - Paths must be relative, without C(..).
    type: dict
    required: true
  dest:
    description: The live configuration directory.
    type: path
    required: true
  prune:
    description:
      - Glob patterns relative to O(dest) (for example C(conf.d/*.cfg)); live files they match that are
        not in O(files) are deleted.
    type: list
    elements: str
    default: []
  validate:
    description:
      - Command (argv) that checks the candidate set; every C(%s) is replaced by the candidate directory.
      - Exit status 0 means valid.
    type: list
    elements: str
    required: true
  mode:
    description: Mode of the written files.
    type: raw
    default: "0644"
  revision:
    description:
      - Revision of the source the O(files) were rendered from (for HAProxy, the etcd store revision at
        which the tenant records were read). Optional.
      - When given, concurrent calls on one O(dest) are serialized by a lock (C(<dest>/.shadowdb-apply.lock))
        and a candidate rendered from an older revision than the last one applied
        (C(<dest>/.shadowdb-revision)) is not applied (RV(stale)), so two runs that read the registry at
        different times cannot put back the older view: the newer render already holds all the older saw.
    type: int
  reload:
    description:
      - Command (argv) run after changed files were applied, for example
        C([systemctl, try-reload-or-restart, haproxy.service]), so that applying and reloading are
        one call. Not run when nothing changed, in check mode, or when the candidate was refused.
    type: list
    elements: str
notes:
  - Validation runs only when something would change (the live set was validated when it was applied).
  - The revision file is bookkeeping; updating it alone does not count as a change.
attributes:
  check_mode:
    support: full
    description: Validates the candidate set in a temporary directory; reports changes without applying them.
  diff_mode:
    support: full
    description: Returns one diff per changed or deleted file.
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Apply the HAProxy configuration if it checks
  shadowdb_haproxy_config:
    dest: /etc/haproxy
    files:
      haproxy.cfg: "{{ lookup('ansible.builtin.template', 'haproxy.cfg.j2') }}"
      conf.d/acme.cfg: "{{ lookup('ansible.builtin.template', 'tenant.cfg.j2') }}"
    prune: [conf.d/*.cfg]
    validate: [haproxy, -c, -f, "%s/haproxy.cfg", -f, "%s/conf.d"]
"""

RETURN = r"""
changed_files:
  description: Files (relative to O(dest)) written or that would be written.
  returned: always
  type: list
  elements: str
removed_files:
  description: Files (relative to O(dest)) deleted or that would be deleted.
  returned: always
  type: list
  elements: str
validate_output:
  description: Output of the validator (warnings), when it ran.
  returned: when validation ran
  type: str
stale:
  description: True when O(revision) is older than the revision last applied; nothing was applied.
  returned: always
  type: bool
applied_revision:
  description: The revision of the live files before this call (null when none was recorded).
  returned: always
  type: int
reloaded:
  description: Whether O(reload) ran and succeeded.
  returned: when O(reload) ran
  type: bool
"""

REVISION_FILE = ".shadowdb-revision"
LOCK_FILE = ".shadowdb-apply.lock"


class ConfigError(Exception):
    pass


def check_relative(path):
    """Refuse absolute paths and parent references; return the normalised relative path."""
    norm = os.path.normpath(path)
    if os.path.isabs(path) or norm.startswith("..") or norm in ("", "."):
        raise ConfigError(f"files: {path!r} is not a path inside dest")
    return norm


def plan(dest, files, prune):
    """Return (changed relative paths, stale relative paths, {path: current content})."""
    current = {rel: read_text(os.path.join(dest, rel)) for rel in files}
    changed = sorted(rel for rel, content in files.items() if current[rel] != content)
    stale = []
    for pattern in prune:
        directory = os.path.join(dest, os.path.dirname(pattern))
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        for name in names:
            rel = os.path.normpath(os.path.join(os.path.dirname(pattern), name))
            if fnmatch.fnmatch(rel, pattern) and rel not in files and os.path.isfile(os.path.join(dest, rel)):
                stale.append(rel)
    return changed, sorted(set(stale)), current


def write_file(path, content, mode):
    """Write one file of the set atomically, making its directory (conf.d/, maps/) first."""
    ensure_dir(os.path.dirname(path), 0o755)
    write_atomic(path, content, mode)


def read_revision(dest):
    """Revision of the live files (None when unknown)."""
    text = read_text(os.path.join(dest, REVISION_FILE))
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def validate(dest, files, command, mode, prune=()):
    """Write the candidate set into a temporary directory in dest and run the validator on it."""
    candidate = tempfile.mkdtemp(prefix=".candidate-", dir=dest)
    try:
        # Directories of pruned fragments exist even when no fragment is left (zero tenants).
        for pattern in prune:
            os.makedirs(os.path.join(candidate, os.path.dirname(pattern)), mode=0o755, exist_ok=True)
        for rel, content in files.items():
            write_file(os.path.join(candidate, rel), content, mode)
        argv = [arg.replace("%s", candidate) for arg in command]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        output = (proc.stdout + proc.stderr).strip()
        return proc.returncode, output.replace(candidate, "<candidate>")
    finally:
        shutil.rmtree(candidate, ignore_errors=True)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="dict", required=True),
            dest=dict(type="path", required=True),
            prune=dict(type="list", elements="str", default=[]),
            validate=dict(type="list", elements="str", required=True),
            mode=dict(type="raw", default="0644"),
            revision=dict(type="int"),
            reload=dict(type="list", elements="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    dest = p["dest"]
    mode = int(p["mode"], 8) if isinstance(p["mode"], str) else int(p["mode"])
    try:
        files = {check_relative(rel): str(content) for rel, content in p["files"].items()}
        prune = [check_relative(pattern) for pattern in p["prune"]]
    except ConfigError as e:
        module.fail_json(msg=str(e))
    if not os.path.isdir(dest):
        module.fail_json(msg=f"dest={dest!r} is not a directory (has routing.yml converged this proxy host?)")

    revision = p["revision"]
    if revision is not None:
        # Held until the module exits: the compare, the check and the writes are one step.
        lock_fd = os.open(os.path.join(dest, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
    applied_revision = read_revision(dest)
    if revision is not None and applied_revision is not None and revision < applied_revision:
        module.exit_json(
            changed=False,
            stale=True,
            applied_revision=applied_revision,
            changed_files=[],
            removed_files=[],
            msg=f"rendered from revision {revision}, older than the live files' ({applied_revision}): "
            "not applied",
        )

    changed, stale, current = plan(dest, files, prune)
    result = dict(
        changed=bool(changed or stale),
        changed_files=changed,
        removed_files=stale,
        stale=False,
        applied_revision=applied_revision,
    )
    result["diff"] = [
        dict(before_header=rel, after_header=rel, before=current[rel] or "", after=files[rel])
        for rel in changed
    ] + [
        dict(
            before_header=rel,
            after_header="(removed)",
            before=read_text(os.path.join(dest, rel)) or "",
            after="",
        )
        for rel in stale
    ]
    record_revision = (
        revision is not None
        and not module.check_mode
        and (applied_revision is None or revision > applied_revision)
    )
    if not result["changed"]:
        if record_revision:
            write_atomic(os.path.join(dest, REVISION_FILE), f"{revision}\n", 0o644)
        module.exit_json(**result)

    try:
        rc, output = validate(dest, files, p["validate"], mode, prune)
    except OSError as e:
        module.fail_json(msg=f"validate: cannot run {p['validate'][0]!r}: {e}", **result)
    result["validate_output"] = output
    if rc != 0:
        result["changed"] = False
        command = " ".join(p["validate"]).replace("%s", "<candidate>")
        module.fail_json(
            msg=f"{command} refused the candidate configuration (exit {rc}); the live files in {dest} "
            f"are untouched and keep being served: {output}",
            **result,
        )
    if not module.check_mode:
        try:
            for rel in sorted(changed, key=lambda r: (os.path.dirname(r) == "", r)):  # main file last
                write_file(os.path.join(dest, rel), files[rel], mode)
            for rel in stale:
                os.unlink(os.path.join(dest, rel))
            if record_revision:
                write_atomic(os.path.join(dest, REVISION_FILE), f"{revision}\n", 0o644)
        except OSError as e:
            module.fail_json(msg=f"dest={dest!r}: cannot apply the checked configuration: {e}", **result)
        if p["reload"]:
            rc, out, err = module.run_command(p["reload"])
            result["reloaded"] = rc == 0
            if rc != 0:
                module.fail_json(
                    msg=f"the configuration was applied but {' '.join(p['reload'])} failed (rc {rc}): "
                    f"{(err or out).strip()}",
                    **result,
                )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
