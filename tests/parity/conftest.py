"""Fixtures of the uvicorn-parity suite: trustme certificates on disk, an app directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from tests.parity.helpers import KEY_PASSWORD, SCOPE_APP, TLSFiles, write_module


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    base = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example.com")
    rogue = trustme.CA().issue_cert("rogue@example.com")
    other = ca.issue_cert("other.example")
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
    )

    def write(name: str, data: bytes) -> Path:
        path = base / name
        path.write_bytes(data)
        return path

    return TLSFiles(
        ca=ca,
        ca_file=write("ca.pem", ca.cert_pem.bytes()),
        cert=write("cert.pem", b"".join(blob.bytes() for blob in server.cert_chain_pems)),
        key=write("key.pem", server.private_key_pem.bytes()),
        encrypted_key=write("key-encrypted.pem", encrypted),
        other_key=write("other-key.pem", other.private_key_pem.bytes()),
        client_cert=write("client.pem", client.private_key_and_cert_chain_pem.bytes()),
        rogue_client_cert=write("rogue.pem", rogue.private_key_and_cert_chain_pem.bytes()),
        garbage=write("garbage.pem", b"this is not a certificate\n"),
    )


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A directory holding ``scopeapp.py`` (SCOPE_APP), for ``--app-dir``."""
    write_module(tmp_path, "scopeapp", SCOPE_APP)
    return tmp_path
