"""Building the TLS context from the ``--ssl-*`` settings (each shard builds its own)."""

from __future__ import annotations

import os
import ssl

from shardcorn.config import Config


class TLSError(Exception):
    """A certificate, key or TLS setting cannot be used; the message is one line."""


def create_ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.is_ssl:
        return None
    certfile, keyfile = config.ssl_certfile, config.ssl_keyfile
    for label, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile),
                        ("--ssl-ca-certs", config.ssl_ca_certs)):
        if path is not None and not os.path.isfile(path):
            raise TLSError(f"{label}: file not found: {path}")
    try:
        context = ssl.SSLContext(config.ssl_version)
    except (ValueError, OSError) as exc:
        raise TLSError(f"--ssl-version {config.ssl_version}: {exc}") from None
    try:
        context.load_cert_chain(certfile or "", keyfile, config.ssl_keyfile_password)
    except ssl.SSLError as exc:
        raise TLSError(f"cannot load the TLS certificate/key ({certfile}, {keyfile}): "
                       f"{exc.reason or exc}") from None
    except OSError as exc:
        raise TLSError(f"cannot read the TLS certificate/key: {exc.strerror or exc}") from None
    try:
        context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    except ValueError:
        raise TLSError(f"--ssl-cert-reqs {config.ssl_cert_reqs}: expected 0, 1 or 2") from None
    if config.ssl_ca_certs:
        try:
            context.load_verify_locations(config.ssl_ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise TLSError(f"--ssl-ca-certs {config.ssl_ca_certs}: {exc}") from None
    if config.ssl_ciphers:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise TLSError(f"--ssl-ciphers {config.ssl_ciphers!r}: no usable cipher") from None
    return context
