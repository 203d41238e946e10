"""Sealed boxes for tenant credentials: the only form in which they leave the playbook run.

A create job gets its own X25519 key pair. The public key goes to the playbook run (extra vars;
public, harmless on disk); the playbook seals the credentials with it inside Ansible's own
process (filter ``shadowdb_api_seal``), so runner events and artifacts only ever carry
ciphertext. The private key is stored in the catalog wrapped (AES-GCM) under a key derived from
the creating caller's bearer token, which the API never stores (only its SHA-256). So the sealed
credentials can be opened only while that caller presents its token, once: the API wipes them
after the first delivery.

This file is also loaded by path from the playbook's filter plugin (ansible runs it in its own
process), so it imports nothing from the ``api`` package.
"""

import base64
import hashlib
import hmac
import json
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_RAW = {"encoding": serialization.Encoding.Raw, "format": serialization.PublicFormat.Raw}
_SEAL_INFO = b"shadowdb-api sealed credentials v1"
_WRAP_INFO = b"shadowdb-api job key v1:"


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh (private, public) X25519 key pair, 32 raw bytes each."""
    private = X25519PrivateKey.generate()
    return (
        private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        ),
        private.public_key().public_bytes(**_RAW),
    )


def _box_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=_SEAL_INFO).derive(
        shared
    )


def seal(public_key: bytes, data: dict) -> str:
    """Encrypt a JSON-able dict for the holder of ``public_key``; base64 text."""
    recipient = X25519PublicKey.from_public_bytes(public_key)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_pub = ephemeral.public_key().public_bytes(**_RAW)
    key = _box_key(ephemeral.exchange(recipient), ephemeral_pub, public_key)
    nonce = os.urandom(12)
    plaintext = json.dumps(data, sort_keys=True).encode()
    return base64.b64encode(ephemeral_pub + nonce + AESGCM(key).encrypt(nonce, plaintext, None)).decode()


def unseal(private_key: bytes, box: str) -> dict:
    """Open what :func:`seal` made; raises ``cryptography.exceptions.InvalidTag`` when tampered."""
    raw = base64.b64decode(box)
    ephemeral_pub, nonce, ciphertext = raw[:32], raw[32:44], raw[44:]
    private = X25519PrivateKey.from_private_bytes(private_key)
    recipient = private.public_key().public_bytes(**_RAW)
    key = _box_key(
        private.exchange(X25519PublicKey.from_public_bytes(ephemeral_pub)), ephemeral_pub, recipient
    )
    return json.loads(AESGCM(key).decrypt(nonce, ciphertext, None))


def _token_key(token: str, job_id: str) -> bytes:
    return hmac.new(token.encode(), _WRAP_INFO + job_id.encode(), hashlib.sha256).digest()


def wrap_private_key(token: str, job_id: str, private_key: bytes) -> bytes:
    """Encrypt a job's private key under a key derived from the caller's token and the job id."""
    nonce = os.urandom(12)
    return nonce + AESGCM(_token_key(token, job_id)).encrypt(nonce, private_key, job_id.encode())


def unwrap_private_key(token: str, job_id: str, wrapped: bytes) -> bytes:
    """Inverse of :func:`wrap_private_key`; raises ``InvalidTag`` for another token or job."""
    return AESGCM(_token_key(token, job_id)).decrypt(wrapped[:12], wrapped[12:], job_id.encode())
