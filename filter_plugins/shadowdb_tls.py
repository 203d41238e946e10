"""ShadowDB Ansible filter: is a certificate on the controller still good to keep?

Lets a play skip the controller-side steps that would only confirm an identity already in place
(key, signing request, signature, files: about five local module runs of a second each on
every tenant run).
"""

import datetime

from ansible.errors import AnsibleFilterError

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
except ImportError:  # pragma: no cover - the controller's requirements include cryptography
    x509 = None


def shadowdb_cert_fresh(cert_pem, ca_pem, renew_days, now=None):
    """True when cert_pem parses, was signed by the CA of ca_pem, and is valid for more than
    renew_days from now; False otherwise (missing, unreadable, another CA, due for renewal)."""
    if x509 is None:
        raise AnsibleFilterError("shadowdb_cert_fresh needs the cryptography package on the controller")
    if not cert_pem or not ca_pem:
        return False
    try:
        cert = x509.load_pem_x509_certificate(str(cert_pem).encode())
        ca = x509.load_pem_x509_certificate(str(ca_pem).encode())
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    now = now or datetime.datetime.now(datetime.UTC)
    return cert.not_valid_after_utc - now > datetime.timedelta(days=int(renew_days))


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self):
        return {"shadowdb_cert_fresh": shadowdb_cert_fresh}
