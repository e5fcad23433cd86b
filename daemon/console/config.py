"""The console's config section (`console:` in config.yaml)."""

from __future__ import annotations

import hashlib
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from perceptd.daemon.health.http import is_loopback_host

_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def hash_token(token: str) -> str:
    """What `console.token_hash` holds for a token: ``sha256:<hex>`` (tokens are random and long,
    so a plain SHA-256 is enough; the config never holds the token itself)."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


class ConsoleConfig(BaseModel):
    """The web console at the root of the HTTP port (needs `http.enabled`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="serve the console at / of the HTTP port")
    token_hash: str | None = Field(
        default=None, description="sha256:<hex> of the access token (`printf %s TOKEN | sha256sum`); "
        "with it every request on the HTTP port needs the token; required beyond loopback")
    recent_events: int = Field(
        default=500, ge=10, le=100_000, description="published events/commands/transcripts kept for the page")
    status_interval_s: float = Field(
        default=1.0, ge=0.2, le=60, description="how often a connected page gets sources/stages/queues")
    timeline_minutes: int = Field(default=30, ge=1, le=24 * 60, description="span of the Timeline view")

    @field_validator("token_hash")
    @classmethod
    def _token_hash(cls, v: str | None) -> str | None:
        if v is not None and not _HASH.match(v.strip().lower()):
            raise ValueError("expected sha256:<64 hex digits> (the hash of the token, never the token)")
        return None if v is None else v.strip().lower()


def check_console_auth(http_host: str, console: ConsoleConfig) -> None:
    """A console reachable beyond loopback must ask for a token: the daemon refuses to start."""
    if console.enabled and console.token_hash is None and not is_loopback_host(http_host):
        raise RuntimeError(f"http.host {http_host!r} serves the console beyond loopback without "
                         "authentication; set console.token_hash (or console.enabled: false)")
