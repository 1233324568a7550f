"""EC P-256 key pairs for the ES256 assertion: the demo's, and throwaway ones for tests."""

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def new_private_pem() -> bytes:
    """A fresh EC P-256 private key in PEM (PKCS#8, unencrypted)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(private_pem: bytes) -> str:
    """The public half of a PEM private key, in PEM."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def ensure_key_pair(private_path: Path) -> tuple[str, bool]:
    """Create the private key file (mode 0600) if missing; return its public PEM and whether new."""
    created = False
    if not private_path.exists():
        private_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(new_private_pem())
        created = True
        public_path = private_path.with_suffix(".pub.pem")
        public_path.write_text(public_pem(private_path.read_bytes()))
    return public_pem(private_path.read_bytes()), created
