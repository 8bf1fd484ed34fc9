"""Building the TLS context from the ``--ssl-*`` settings (each shard builds its own).

The launcher builds one first, in ``startup_checks``, before any socket is bound, so a missing
file, a wrong password or a key that does not belong to its certificate is one line and exit
1 there, never a traceback from every shard. OpenSSL's own errors ("PEM lib") do not say which
file is wrong, so the files are looked at first and the message names the option.
"""

from __future__ import annotations

import os
import ssl
import warnings

from shardcorn.config import Config
from shardcorn.logs import error_log


class TLSError(Exception):
    """A certificate, key or TLS setting cannot be used; the message is one line."""


class _PasswordNeededError(Exception):
    """OpenSSL asked for the key's password and none was given."""


# --ssl-version numbers that pin one protocol version (ssl.PROTOCOL_TLSv1, _TLSv1_1, _TLSv1_2).
# Those constants are deprecated and warn on every use; a server context pinned with
# minimum/maximum_version does the same job. 2 (PROTOCOL_TLS) and 17 negotiate, like the
# default.
_PINNED_VERSIONS = {
    3: ssl.TLSVersion.TLSv1,
    4: ssl.TLSVersion.TLSv1_1,
    5: ssl.TLSVersion.TLSv1_2,
}
_LEGACY_VERSIONS = (3, 4)

# What OpenSSL and the ssl module call HTTP/1.1 in ALPN: clients that also speak h2 then
# settle on the one protocol we serve instead of guessing.
_ALPN = ["http/1.1"]


def create_ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.is_ssl:
        return None
    certfile, keyfile = config.ssl_certfile or "", config.ssl_keyfile or ""
    _check_pem(certfile, "--ssl-certfile", b"CERTIFICATE-----")
    _check_pem(keyfile, "--ssl-keyfile", b"PRIVATE KEY-----")
    if config.ssl_ca_certs is not None:
        _check_pem(config.ssl_ca_certs, "--ssl-ca-certs", b"CERTIFICATE-----")
    if config.ssl_cert_reqs and config.ssl_ca_certs is None:
        # A server context trusts no CA by default, so no client certificate could pass.
        raise TLSError(
            f"--ssl-cert-reqs {config.ssl_cert_reqs} needs --ssl-ca-certs: the CA certificates "
            "that sign the client certificates"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _pin_version(context, config.ssl_version)
    _load_chain(context, certfile, keyfile, config.ssl_keyfile_password)
    context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    if config.ssl_ca_certs is not None:
        try:
            context.load_verify_locations(config.ssl_ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise TLSError(
                f"--ssl-ca-certs {config.ssl_ca_certs}: cannot load it ({exc})"
            ) from None
    if config.ssl_ciphers:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise TLSError(f"--ssl-ciphers {config.ssl_ciphers!r}: no usable cipher") from None
    context.set_alpn_protocols(_ALPN)
    return context


def _check_pem(path: str, option: str, marker: bytes) -> None:
    """Fail with the option's name if ``path`` is missing, unreadable or not the PEM we need."""
    if not os.path.exists(path):
        raise TLSError(f"{option}: file not found: {path}")
    if not os.path.isfile(path):
        raise TLSError(f"{option}: not a file: {path}")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise TLSError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    if marker not in data:
        what = "private key" if b"KEY" in marker else "certificate"
        raise TLSError(f"{option}: no PEM {what} in {path}")


def _is_encrypted(keyfile: str) -> bool:
    with open(keyfile, "rb") as fh:
        data = fh.read()
    # PKCS#8 says "ENCRYPTED PRIVATE KEY"; the traditional OpenSSL form has a Proc-Type line.
    return b"ENCRYPTED" in data


def warn_about_settings(config: Config) -> None:
    """Log what is allowed but unwise in the TLS settings: once, from the launcher (every
    shard builds its own context, and one warning per shard would say the same thing)."""
    if config.is_ssl and config.ssl_version in _LEGACY_VERSIONS:
        error_log.warning(
            "--ssl-version %d pins %s, which is deprecated and refused by current clients",
            config.ssl_version,
            _PINNED_VERSIONS[config.ssl_version].name,
        )


def _pin_version(context: ssl.SSLContext, ssl_version: int) -> None:
    version = _PINNED_VERSIONS.get(ssl_version)
    if version is None:
        return
    with warnings.catch_warnings():
        # Python warns about TLS 1.0/1.1 here; warn_about_settings told the user in the log.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version


def _load_chain(context: ssl.SSLContext, certfile: str, keyfile: str, password: str | None) -> None:
    def ask_password() -> str:
        # Without a callback OpenSSL would prompt on the terminal and block the server.
        if password is None:
            raise _PasswordNeededError
        return password

    try:
        context.load_cert_chain(certfile, keyfile, ask_password)
    except _PasswordNeededError:
        raise TLSError(
            f"--ssl-keyfile {keyfile} is encrypted: give its --ssl-keyfile-password"
        ) from None
    except ssl.SSLError as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            raise TLSError(
                f"--ssl-keyfile {keyfile} is not the key of --ssl-certfile {certfile}"
            ) from None
        if password is not None and _is_encrypted(keyfile):
            raise TLSError(f"--ssl-keyfile-password: wrong password for {keyfile}") from None
        raise TLSError(
            f"cannot load the TLS certificate/key ({certfile}, {keyfile}): {exc}"
        ) from None
    except OSError as exc:
        raise TLSError(f"cannot read the TLS certificate/key: {exc.strerror or exc}") from None
