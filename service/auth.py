"""Bearer-token authentication: every route needs `Authorization: Bearer <token>` but the probes and /metrics.

Off unless tokens are configured: `CONVNET_API_TOKEN` (one token) and `CONVNET_API_TOKEN_FILE` (a mounted
secret, one token per line, read at start). Several tokens let clients move to a new one before the old
one is removed. A token is compared with every configured one in constant time (sha256 digests of both,
so not even its length shows, through `hmac.compare_digest`); a request without a valid token is answered
401 with `WWW-Authenticate: Bearer` and no more detail. Tokens are never logged.

Open: `/livez`, `/readyz`, `/healthz` and the Open Inference Protocol's `/v2/health/{live,ready}`, which
the kubelet and KServe probe without credentials, and `/metrics`, which Prometheus scrapes without them.
None of them takes or returns a model's input or output; keep /metrics away from untrusted networks
(README, "Authentication").
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Unauthorized
from service.v2 import PREFIX as V2_PREFIX

OPEN_PATHS = frozenset(
    {"/livez", "/readyz", "/healthz", "/metrics", f"{V2_PREFIX}/health/live", f"{V2_PREFIX}/health/ready"}
)
# RFC 6750's b64token: what a client can send after "Bearer " unquoted.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_POLICY_VIOLATION = 1008  # the WebSocket close code for a refused connection


def read_tokens(token: SecretStr | None, token_file: Path | None) -> list[str]:
    """The configured tokens: `token`, then every non-blank line of `token_file`; [] when neither is set.

    A file that cannot be read, holds no token or a token a client could not send stops the start-up
    with a message that names the setting and the line, never the token.
    """
    sources = [("CONVNET_API_TOKEN", token.get_secret_value())] if token is not None else []
    if token_file is not None:
        try:
            lines = token_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"CONVNET_API_TOKEN_FILE: cannot read {token_file}: {error}") from None
        found = [
            (f"line {n} of {token_file}", line.strip()) for n, line in enumerate(lines, 1) if line.strip()
        ]
        if not found:
            raise ValueError(f"CONVNET_API_TOKEN_FILE: {token_file} holds no token (one per line)")
        sources += found
    for where, value in sources:
        if not _TOKEN.fullmatch(value):
            raise ValueError(
                f"the token in {where} has characters a bearer token cannot carry "
                "(allowed: letters, digits, -._~+/ and trailing =)"
            )
    return [value for _, value in sources]


class BearerAuth:
    """Pure ASGI middleware, before every middleware of the service that answers a route (only the shutdown
    gate, which answers nothing but 503 while draining, is outside it)."""

    def __init__(self, app: ASGIApp, *, tokens: Sequence[str]) -> None:
        if not tokens:
            raise ValueError("BearerAuth needs at least one token")
        self.app = app
        self.digests = [_digest(token.encode()) for token in tokens]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in ("http", "websocket")
            or scope["path"] in OPEN_PATHS
            or self._authorized(scope)
        ):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": _POLICY_VIOLATION})
        else:
            await Unauthorized("unauthorized").to_response()(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        digest = _digest(credentials.strip().encode("latin-1"))
        # Every configured token is compared, whichever matches: the time taken tells nothing.
        matches = [hmac.compare_digest(digest, known) for known in self.digests]
        return any(matches)


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()
