# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A tenant's TLS key, made on its host (it never leaves it), and the signing request the
controller's CA signs (the CA takes only its public key; names and usages are the controller's).

``run(argv, data=None)`` is the caller's command runner: it returns the command's output and
raises the caller's own error when the command fails."""

NEW_KEY = ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout"]


def new_key(run):
    """PEM of a new EC P-256 private key."""
    return run(NEW_KEY)


def signing_request(run, key, common_name, extensions=()):
    """PEM signing request for key (read from standard input), with ``-addext`` extensions."""
    argv = ["openssl", "req", "-new", "-key", "/dev/stdin", "-subj", f"/CN={common_name}"]
    for extension in extensions:
        argv += ["-addext", extension]
    return run(argv, data=key)
