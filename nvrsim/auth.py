"""Digest authentication (RFC 2617, qop=auth, MD5) with a Hikvision-style lock-out.

After `lock_after` failed logins in a row the device locks logins for `lock_for`
seconds: every request is then refused, even with the right password, and the 401
answer's `userCheck` says `lockStatus lock` with the seconds left in `unlockTime`.
Before that, a refused login's answer counts down `retryLoginTime`.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import time

REALM = "DS-nvrsim"
XMLNS = "http://www.hikvision.com/ver20/XMLSchema"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def check(handler, method: str) -> bool:
    """True if the request carries a valid digest login; otherwise answer 401 and return False."""
    dev = handler.device
    fields = {k: v1 or v2 for k, v1, v2 in
              re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', handler.headers.get("Authorization", ""))}
    now = time.time()
    with dev.lock:
        locked_left = dev.locked_until - now
    if locked_left > 0:
        with dev.lock:
            dev.stats.locked_answers += 1
        return _refuse(handler, locked=int(locked_left) + 1)
    if fields.get("nonce") in dev.nonces and fields.get("username") == dev.username:
        ha1 = _md5(f"{dev.username}:{REALM}:{dev.password}")
        ha2 = _md5(f"{method}:{fields.get('uri', '')}")
        expected = _md5(f"{ha1}:{fields['nonce']}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}")
        if secrets.compare_digest(expected, fields.get("response", "")):
            with dev.lock:
                dev.failed_logins = 0
            return True
    if "response" not in fields:
        return _refuse(handler)
    with dev.lock:
        dev.stats.unauthorized += 1
        dev.failed_logins += 1
        limit = dev.faults.lock_after
        lock = limit is not None and dev.failed_logins >= limit
        if lock:
            dev.locked_until = now + dev.faults.lock_for
            dev.failed_logins = 0
        left = None if limit is None else limit - dev.failed_logins
    if lock:
        return _refuse(handler, locked=int(dev.faults.lock_for))
    return _refuse(handler, left=left)


def _refuse(handler, locked: int | None = None, left: int | None = None) -> bool:
    nonce = secrets.token_hex(16)
    with handler.device.lock:
        handler.device.nonces.add(nonce)
    lock = (f"<lockStatus>lock</lockStatus><unlockTime>{locked}</unlockTime><retryLoginTime>0</retryLoginTime>"
            if locked else "<lockStatus>unlock</lockStatus><unlockTime>0</unlockTime>"
            + (f"<retryLoginTime>{left}</retryLoginTime>" if left is not None else ""))
    handler.send_text(
        401,
        f'<?xml version="1.0" encoding="UTF-8"?><userCheck version="2.0" xmlns="{XMLNS}">'
        f"<statusValue>401</statusValue><statusString>Unauthorized</statusString>{lock}</userCheck>",
        headers={"WWW-Authenticate": f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", algorithm=MD5'},
    )
    return False
