"""AES-256-GCM for sample files at rest (the `cryptography` package, optional).

Each file gets a fresh 96-bit nonce; the sample id is the associated data, so a file renamed
to another id (or edited) fails authentication instead of decoding as someone else's sample.
The key is 32 random bytes in a file created 0600 with O_EXCL (never overwritten).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)
KEY_BYTES = 32
NONCE_BYTES = 12


class SampleCryptoError(Exception):
    """A key problem or a file that cannot be decrypted; the message names the file."""


def _aesgcm():
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise SampleCryptoError(
            "sample encryption needs the 'cryptography' package (pip install cryptography)"
        ) from None
    return AESGCM


def available() -> bool:
    try:
        _aesgcm()
    except SampleCryptoError:
        return False
    return True


def load_key(path: Path, create: bool = False) -> bytes:
    """Read the key (or create it 0600 when asked); refuse keys readable by others."""
    path = Path(path)
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # a concurrent creator won; read theirs
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            log.info("event=sample_key_created path=%s", path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise SampleCryptoError(f"{path}: key file missing (samples are encrypted)") from None
    except OSError as exc:
        raise SampleCryptoError(f"{path}: cannot read key ({exc.strerror})") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SampleCryptoError(f"{path}: key file is accessible by group/others (chmod 600)")
    if len(data) != KEY_BYTES:
        raise SampleCryptoError(f"{path}: expected a {KEY_BYTES}-byte key, got {len(data)} bytes")
    return data


class Cipher:
    """Seal/open one sample body; `aad` binds the ciphertext to its sample id."""

    def __init__(self, key: bytes) -> None:
        self._aead = _aesgcm()(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes, where: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        if len(blob) < NONCE_BYTES + 16:
            raise SampleCryptoError(f"{where}: truncated ciphertext")
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise SampleCryptoError(f"{where}: cannot decrypt (wrong key or tampered file)") from None
