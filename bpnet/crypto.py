"""Encryption of model and exported files with the user's key (no ML imports: the Jetson image uses it).

``BPNETENC1 | salt(16) | nonce(12) | AES-256-GCM(ciphertext)``, the key derived from the user's key
string with PBKDF2-HMAC-SHA256 (``cryptography``). A wrong key fails authentication and is reported
as such; nothing home-made is involved.
"""

from __future__ import annotations

import os

from bpnet.errors import ModelError

MAGIC = b"BPNETENC1"
_SALT, _NONCE, _ITERATIONS = 16, 12, 200_000


class ModelKeyError(ModelError, ValueError):
    """The model file is encrypted and the key is missing or wrong."""


def _derive(key: str, salt: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    return PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=_ITERATIONS).derive(key.encode())


def encrypt(data: bytes, key: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt, nonce = os.urandom(_SALT), os.urandom(_NONCE)
    return MAGIC + salt + nonce + AESGCM(_derive(key, salt)).encrypt(nonce, data, MAGIC)


def decrypt(blob: bytes, key: str | None, where: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not blob.startswith(MAGIC):
        return blob
    if not key:
        raise ModelKeyError(f"{where}: the model is encrypted; pass its key (-k or $BPNET_MODEL_KEY)")
    salt = blob[len(MAGIC):len(MAGIC) + _SALT]
    nonce = blob[len(MAGIC) + _SALT:len(MAGIC) + _SALT + _NONCE]
    try:
        return AESGCM(_derive(key, salt)).decrypt(nonce, blob[len(MAGIC) + _SALT + _NONCE:], MAGIC)
    except InvalidTag:
        raise ModelKeyError(f"{where}: wrong key (or the file is corrupt): decryption failed") from None
