"""Schemathesis hooks for scripts/wire-proof: metal-api's HMAC authentication.

Loaded with SCHEMATHESIS_HOOKS=hooks (wire-proof/ on PYTHONPATH). Every request gets a fresh
signature, as metal-stack/security verifies it (reference: shared/reference/metal-api.md §2.1):

    X-Date:        UTC, second precision, literal Z ("%Y-%m-%dT%H:%M:%SZ")
    X-Data-Salt:   24 random ASCII letters
    Authorization: "<auth type> <lowercase hex HMAC-SHA256(key, X-Date + METHOD + X-Data-Salt)>"

Key and auth type come from WIRE_PROOF_HMAC_KEY / WIRE_PROOF_AUTH_TYPE (default: mini-lab's
metal-edit / Metal-Edit, which may call every operation the simulated server implements).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import secrets
import string

import schemathesis

HMAC_KEY = os.environ.get("WIRE_PROOF_HMAC_KEY", "metal-edit")
AUTH_TYPE = os.environ.get("WIRE_PROOF_AUTH_TYPE", "Metal-Edit")


def authorization(key: str, auth_type: str, method: str, date: str, salt: str) -> str:
    """The Authorization header value for one request."""
    mac = hmac.new(key.encode(), (date + method.upper() + salt).encode(), hashlib.sha256).hexdigest()
    return f"{auth_type} {mac}"


def hmac_headers(method: str, key: str = HMAC_KEY, auth_type: str = AUTH_TYPE) -> dict[str, str]:
    """The three authentication headers of one request with `method`, signed now."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    salt = "".join(secrets.choice(string.ascii_letters) for _ in range(24))
    return {"X-Date": date, "X-Data-Salt": salt, "Authorization": authorization(key, auth_type, method, date, salt)}


# refresh_interval=None: no caching, the signature depends on the method and the time of the
# request, so it is computed in `set` for every single case.
@schemathesis.auth(refresh_interval=None)
class MetalHmac:
    def get(self, case, ctx):
        return AUTH_TYPE

    def set(self, case, data, ctx):
        if case.headers is None:
            case.headers = {}
        case.headers.update(hmac_headers(case.method))
