"""Standard Webhooks signatures (https://www.standardwebhooks.com), the sending side.

A receiver checks three headers: ``webhook-id`` (the message's id, the same on every retry),
``webhook-timestamp`` (this attempt's Unix time, which receivers hold to a few minutes) and
``webhook-signature``: ``v1,<base64 of HMAC-SHA256 over "id.timestamp.body">`` under the
secret's bytes, the base64 after ``whsec_``. Several space-separated signatures are allowed:
while a rotated-out secret still signs, both are sent. The few lines of HMAC are ours, so
the sending side needs no library; the tests verify with the reference ``standardwebhooks``
library, as a receiver would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from stylequeue.shared.settings import WEBHOOK_SECRET_PREFIX

SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh ``whsec_`` secret: 32 random bytes, base64."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret: the bytes its base64 stands for."""
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``message_id.timestamp.body``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(
    signing_secrets: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    return " ".join(sign(s, message_id, timestamp, body) for s in signing_secrets)


def webhook_headers(
    signing_secrets: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(signing_secrets, message_id, timestamp, body),
    }
