"""TLS to NVRs: which certificate a worker accepts from a device, and clear words when it refuses one.

Factory certificates of Hikvision devices are self-signed, so "verify against the
system CAs" fails for most HTTPS NVRs. The choices, strictest first:
- a pinned certificate: its SHA-256 fingerprint from the sheet (`tls_fingerprint`)
  or the worker option `--nvr-fingerprint HOST[:PORT]=SHA256`. Only that exact
  certificate is accepted, whoever signed it.
- `--nvr-ca-file`: a private CA that signed the devices' certificates.
- the system's CAs (the default).
- `--nvr-insecure`: accept any certificate. Encryption without authentication: anyone
  on the path can pose as the NVR and receive its digest login. For a lab only.
A TLS failure is a configuration error: the task fails for good with a message that
names the certificate problem and the fingerprint the device presented.
"""
from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field

from requests.adapters import HTTPAdapter

from .errors import SetupError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def normalise_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits; `AB:CD:..` and spaces are accepted."""
    value = re.sub(r"[\s:]", "", str(text)).lower()
    if not _HEX64.match(value):
        raise SetupError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return value


def pretty(fingerprint: str) -> str:
    """`AB:CD:...`, the way browsers and `openssl x509 -fingerprint -sha256` show it."""
    return ":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2)).upper()


@dataclass(frozen=True)
class TLSChoice:
    """What a worker host accepts from NVRs over HTTPS (picklable: it travels to worker processes)."""

    ca_file: str | None = None
    insecure: bool = False
    pins: dict[str, str] = field(default_factory=dict)  # "host:port" or "host" -> fingerprint

    @staticmethod
    def parse_pins(options: list[str]) -> dict[str, str]:
        """`--nvr-fingerprint HOST[:PORT]=SHA256` options into a dict; SetupError on a bad one."""
        pins = {}
        for option in options:
            where, sep, value = option.rpartition("=")
            if not sep or not where.strip():
                raise SetupError(f"--nvr-fingerprint {option!r}: expected HOST[:PORT]=SHA256")
            pins[where.strip().lower()] = normalise_fingerprint(value)
        return pins

    def pin_for(self, host: str, port: int, task_pin: str | None) -> str | None:
        """The fingerprint that this device must present, if one is pinned."""
        if task_pin:
            return normalise_fingerprint(task_pin)
        return self.pins.get(f"{host}:{port}") or self.pins.get(host)


class PinnedAdapter(HTTPAdapter):
    """An adapter that accepts exactly one certificate, by its SHA-256 fingerprint (urllib3 checks it)."""

    def __init__(self, fingerprint: str, **kwargs):
        self.fingerprint = fingerprint
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["assert_fingerprint"] = self.fingerprint
        super().init_poolmanager(*args, **kwargs)


def presented_fingerprint(host: str, port: int, timeout: float) -> str | None:
    """The SHA-256 fingerprint of the certificate the device presents, or None if it cannot be read."""
    import hashlib

    try:
        pem = ssl.get_server_certificate((host, port), timeout=timeout)
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    except (OSError, ValueError):
        return None


def describe_tls_error(text: str) -> str:
    """The certificate problem in a TLS error, in plain words."""
    lowered = text.lower()
    for marker, words in (
        ("fingerprints did not match", "its certificate is not the pinned one (fingerprint mismatch)"),
        ("self signed certificate in certificate chain", "its certificate chain ends in an untrusted self-signed CA"),
        ("self-signed certificate in certificate chain", "its certificate chain ends in an untrusted self-signed CA"),
        ("self signed", "its certificate is self-signed and not trusted"),
        ("self-signed", "its certificate is self-signed and not trusted"),
        ("certificate has expired", "its certificate has expired"),
        ("not yet valid", "its certificate is not valid yet (check the device's clock)"),
        ("hostname mismatch", "its certificate is for another name"),
        ("doesn't match", "its certificate is for another name"),
        ("unable to get local issuer", "its certificate is signed by a CA this worker does not trust"),
        ("wrong version number", "it does not speak TLS on this port (is it HTTP?)"),
        ("unsupported protocol", "it offers only a TLS version too old to accept"),
        ("handshake failure", "the TLS handshake failed (no common protocol or cipher)"),
    ):
        if marker in lowered:
            return words
    return "the TLS connection failed"
