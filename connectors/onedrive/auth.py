"""App-only Microsoft Graph token (OAuth 2.0 client credentials), refreshed before it expires.

Why not msal: msal (1.39) only accepts `https://` authorities (`msal.authority.canonicalize`
rejects anything else), so it cannot be pointed at the loopback sandbox without TLS
certificates; it also makes an OIDC discovery round trip first and sends its requests through
`requests`, outside the shared HTTP layer (no shared retries, Retry-After, stats or secret
scrubbing). The client-credentials grant itself is one form POST, done here through
`aiq_sync.http.ApiClient`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from aiq_sync.http import ApiClient, ApiError, RetryPolicy

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# Refresh this long before the token expires (a tenth of its lifetime when that is shorter),
# so a request never leaves with a token that dies on the way.
REFRESH_MARGIN_S = 300.0


class OneDriveError(Exception):
    """A OneDrive source cannot be read; the message says why and never holds a secret."""


class AppToken:
    """Bearer tokens for one app registration. Thread-safe; one POST per lifetime.

    Tokens are shared within the process (keyed by endpoint, tenant, client and a hash of the
    secret): the sensor ticks every minute and `aiq-sync run` lands each file in its own run,
    and neither should sign in every time."""

    _shared: dict[str, tuple[str, float]] = {}
    _shared_lock = threading.Lock()

    def __init__(
        self,
        *,
        login_base_url: str,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        scope: str = GRAPH_SCOPE,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self._form = {
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": scope,
            "grant_type": "client_credentials",
        }
        # Field names for messages: the env var names, never their values.
        self._labels = labels or {}
        self._clock = clock
        fingerprint = hashlib.sha256(client_secret.encode()).hexdigest()
        self._key = f"{login_base_url}|{tenant_id}|{client_id}|{scope}|{fingerprint}"
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self.issued = 0
        self._client = ApiClient(
            login_base_url,
            secret_values=[client_secret],
            retry=retry,
            max_concurrency=1,
            name="aad",
            sleep=sleep,
            clock=clock,
        )

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                with AppToken._shared_lock:
                    shared = AppToken._shared.get(self._key)
                if shared is not None and self._clock() < shared[1]:
                    self._token, self._refresh_at = shared
                else:
                    self._fetch()
                    with AppToken._shared_lock:
                        AppToken._shared[self._key] = (self._token or "", self._refresh_at)
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """`token` was rejected (revoked, or expired early): the next call gets a new one."""
        with self._lock:
            if self._token == token:
                self._token = None
            with AppToken._shared_lock:
                if AppToken._shared.get(self._key, ("",))[0] == token:
                    del AppToken._shared[self._key]

    @property
    def secrets(self) -> list[str]:
        """Values to scrub from any text (the client secret and the current token)."""
        return [s for s in (self._form["client_secret"], self._token) if s]

    def request_stats(self) -> dict[str, Any]:
        return self._client.stats.as_dict()

    def close(self) -> None:
        self._client.close()

    def _fetch(self) -> None:
        path = f"{quote(self.tenant_id, safe='')}/oauth2/v2.0/token"
        started = self._clock()
        try:
            answer = self._client.request(
                "POST",
                path,
                content=urlencode(self._form).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                idempotent=True,  # asking again for a token has no side effect
            )
        except ApiError as exc:
            raise OneDriveError(self._explain(exc)) from None
        body = answer.json if isinstance(answer.json, dict) else {}
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise OneDriveError(
                f"token endpoint of tenant {self.tenant_id} answered without an access_token"
            )
        try:
            lifetime = float(body.get("expires_in", 3599))
        except (TypeError, ValueError):
            lifetime = 3599.0
        self._token = token
        self._refresh_at = started + lifetime - min(REFRESH_MARGIN_S, lifetime / 10)
        self.issued += 1

    def _explain(self, exc: ApiError) -> str:
        where = f"sign-in to tenant {self.tenant_id} failed"
        secret, client = (
            self._labels.get("client_secret_env", "the client secret"),
            self._labels.get("client_id_env", "the client id"),
        )
        detail = exc.body_excerpt or str(exc)
        for value in self.secrets:
            detail = detail.replace(value, "***")
        if exc.status in (400, 401):
            return (
                f"{where} ({exc.status}): {detail}; check {client}, {secret} and the tenant id "
                "(the app needs the Files.Read.All application permission with admin consent)"
            )
        return f"{where}: {detail}"
