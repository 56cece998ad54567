"""NVR passwords at rest: sealed with a key kept outside the database.

Workers need the NVR passwords, so the coordinator must store them; it stores
them encrypted (Fernet: AES-128-CBC with an HMAC, from the `cryptography`
package), so a copy of the database, a backup or a PostgreSQL dump reveals no
password without the key. The key comes from `TASKSERVER_SECRET_KEY` or a key
file; for a SQLite database without either, a key file is made next to the
database (readable by its owner only), which protects copies of the database
file but not a stolen folder: keep the key elsewhere for that.

Several keys may be given, newest first (`new,old`): the newest seals, all of
them open, and `taskserver rotate-key` re-seals everything with the newest.
"""
from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import ConfigError

PREFIX = "fernet:"  # sealed values carry it; a value without it is a plaintext left by an older version
CHECK = "taskserver"  # sealed and stored once, to notice a wrong key at start rather than at a claim


class Vault:
    """Seals and opens passwords with one or more Fernet keys (the first one seals)."""

    def __init__(self, keys: list[str], origin: str):
        if not keys:
            raise ConfigError(f"no key in {origin}")
        try:
            self._fernet = MultiFernet([Fernet(k.strip().encode()) for k in keys])
        except (ValueError, TypeError):
            raise ConfigError(f"{origin} is not a key list: each key is 44 characters of URL-safe base64"
                              " (make one with: taskserver new-key)") from None
        self.origin = origin

    def seal(self, password: str) -> str:
        """The password, encrypted, as stored."""
        return PREFIX + self._fernet.encrypt(password.encode()).decode()

    def open(self, stored: str) -> str:
        """The password from its stored form (a plaintext from an older version passes through)."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise ConfigError(f"a stored password cannot be opened with the key from {self.origin}: the database"
                              " was sealed with another key") from None

    def reseal(self, stored: str) -> str:
        """The stored value sealed with the newest key (for key rotation and old plaintexts)."""
        return self.seal(self.open(stored))

    def sealed(self, stored: str) -> bool:
        return stored.startswith(PREFIX)


def new_key() -> str:
    """A fresh random key."""
    return Fernet.generate_key().decode()


def load_vault(secret_key: str | None, key_file: str | None, db_path: str | None) -> Vault:
    """The vault the settings name: the key variable, else the key file, else one next to a SQLite file.

    A PostgreSQL database has no file to sit next to, and several coordinators must
    share one key: there the key must be given.
    """
    if secret_key:
        return Vault(secret_key.split(","), "TASKSERVER_SECRET_KEY")
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise ConfigError(f"key file {path} not found (make one with: taskserver new-key > {path})")
        return Vault(path.read_text().split(), str(path))
    if db_path is None:
        raise ConfigError("a PostgreSQL database needs the key that seals NVR passwords: set TASKSERVER_SECRET_KEY"
                          " (the same on every coordinator; make one with: taskserver new-key) or --key-file")
    path = Path(f"{db_path}.key")
    if not path.exists():
        _create_key_file(path)
    return Vault(path.read_text().split(), str(path))


def _create_key_file(path: Path) -> None:
    """Write a new key file readable by its owner only; a process starting at the same moment may win."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(new_key() + "\n")
        out.flush()
        os.fsync(out.fileno())
    try:
        os.link(part, path)  # atomic, and never replaces a key another process just made
    except FileExistsError:
        pass
    finally:
        part.unlink()
