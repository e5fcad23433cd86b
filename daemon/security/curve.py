"""CURVE encryption and authentication for the events PUB and the control socket.

One switch (`security.curve: true`) turns it on for both sockets.  `keys_dir` holds the
server key pair (`server.key`, `server.key_secret`), client key pairs made by
`perceptd keys generate`, and `authorized/`: the allowlist of client public keys, one
certificate file each.  The allowlist is re-read when that folder changes, so adding or
removing a client needs no restart (existing connections keep their session).  A client
whose key is not listed fails the handshake: it receives nothing and sends nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from pydantic import BaseModel, ConfigDict, Field
from zmq.auth.thread import ThreadAuthenticator

from perceptd.daemon.errors import UserError

log = logging.getLogger(__name__)

SERVER = "server"
AUTHORIZED = "authorized"


class SecurityError(UserError):
    """Missing or unreadable keys; the message names the file."""


class SecurityConfig(BaseModel):
    """CURVE for the events and control sockets (generate keys with `perceptd keys generate DIR`)."""

    model_config = ConfigDict(extra="forbid")

    curve: bool = Field(default=False, description="encrypt and authenticate the PUB and control sockets")
    keys_dir: Path = Field(
        default=Path("keys"), description="server.key(_secret), client key pairs, authorized/ allowlist"
    )
    authorized_dir: Path | None = Field(
        default=None, description="allowlist of client public keys (default: KEYS_DIR/authorized)"
    )
    client_key: str = Field(
        default="client", pattern=r"^[A-Za-z0-9_.-]+$",
        description="key pair the local CLI (send/status/tail) uses: KEYS_DIR/NAME.key_secret",
    )

    def resolved(self, base: Path) -> SecurityConfig:
        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else (base / p).resolve()

        return self.model_copy(update={"keys_dir": fix(self.keys_dir),
                                       "authorized_dir": fix(self.authorized_dir)})

    @property
    def server_secret_file(self) -> Path:
        return self.keys_dir / f"{SERVER}.key_secret"

    @property
    def server_public_file(self) -> Path:
        return self.keys_dir / f"{SERVER}.key"

    @property
    def allowlist_dir(self) -> Path:
        return self.authorized_dir or self.keys_dir / AUTHORIZED

    @property
    def client_secret_file(self) -> Path:
        return self.keys_dir / f"{self.client_key}.key_secret"


def validation_context(data: Any) -> dict[str, bool]:
    """What section validators may know of the security section (CURVE permits wide binds)."""
    sec = data.get("security") if isinstance(data, dict) else None
    return {"curve": isinstance(sec, dict) and sec.get("curve") is True}


# --------------------------------------------------------------------------- keys


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read CURVE key {path}: {exc}") from None
    if need_secret and not secret:
        raise SecurityError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def generate_keys(keys_dir: Path, clients: list[str], force: bool = False) -> list[Path]:
    """Server + client key pairs; each client's public key is put on the allowlist."""
    keys_dir = Path(keys_dir)
    names = [SERVER, *clients]
    existing = [keys_dir / f"{n}.key_secret" for n in names if (keys_dir / f"{n}.key_secret").exists()]
    if existing and not force:
        raise SecurityError(f"{existing[0]} exists; replacing keys locks out every client "
                            "(use --force to do it anyway)")
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    allow = keys_dir / AUTHORIZED
    allow.mkdir(exist_ok=True)
    written = []
    for name in names:
        public, secret = zmq.auth.create_certificates(keys_dir, name)
        os.chmod(secret, 0o600)
        written += [Path(public), Path(secret)]
        if name != SERVER:
            shutil.copyfile(public, allow / f"{name}.key")
            written.append(allow / f"{name}.key")
    return written


# --------------------------------------------------------------------------- server


class CurveServer:
    """Server keys for the daemon's sockets plus a ZAP handler that checks the allowlist."""

    def __init__(self, ctx: zmq.Context, cfg: SecurityConfig) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.public, secret = _load(cfg.server_secret_file, need_secret=True)
        assert secret is not None
        self._secret = secret
        if not cfg.allowlist_dir.is_dir():
            raise SecurityError(f"CURVE allowlist folder {cfg.allowlist_dir} does not exist")
        self._lock = threading.Lock()
        self._keys: set[bytes] = set()
        self._stamp: tuple[int, int] | None = None
        self.allowed = 0
        self.denied = 0
        self._auth: ThreadAuthenticator | None = None
        self._reload()

    def start(self) -> None:
        """Start the ZAP handler; must run before any secured socket binds."""
        self._auth = ThreadAuthenticator(self.ctx, log=logging.getLogger(f"{__name__}.zap"))
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=self)
        log.info("event=curve_enabled server_key=%s authorized_keys=%d allowlist=%s",
                 self.public.decode()[:8], len(self._keys), self.cfg.allowlist_dir)

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def apply(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE server (call before bind)."""
        sock.curve_secretkey = self._secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def callback(self, domain: str, client_key: bytes) -> bool:
        """ZAP: is this z85 client key on the allowlist? (runs in the authenticator thread)"""
        self._reload()
        with self._lock:
            ok = client_key in self._keys
            if ok:
                self.allowed += 1
            else:
                self.denied += 1
            n = self.denied
        if not ok and (n <= 10 or n % 100 == 0):
            log.warning("event=auth_denied client_key=%s denied_total=%d",
                        client_key.decode(errors="replace")[:8], n)
        return ok

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"allowed": self.allowed, "denied": self.denied,
                    "authorized_keys": len(self._keys)}

    def _reload(self) -> None:
        d = self.cfg.allowlist_dir
        try:
            st = d.stat()
        except OSError as exc:
            log.error("event=allowlist_unreadable dir=%s error=%s", d, exc)
            return
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp == self._stamp:
            return
        keys = set()
        for f in sorted(d.glob("*.key")):
            try:
                keys.add(_load(f, need_secret=False)[0])
            except SecurityError as exc:
                log.error("event=allowlist_bad_key %s", exc)
        with self._lock:
            changed = self._stamp is not None and keys != self._keys
            self._keys, self._stamp = keys, stamp
        if changed:
            log.info("event=allowlist_reloaded authorized_keys=%d", len(keys))


# --------------------------------------------------------------------------- client


@dataclass(frozen=True)
class CurveClient:
    """A client's key pair plus the server's public key."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_files(cls, client_secret: Path, server_public: Path) -> CurveClient:
        public, secret = _load(Path(client_secret), need_secret=True)
        server, _ = _load(Path(server_public), need_secret=False)
        assert secret is not None
        return cls(public, secret, server)

    @classmethod
    def from_config(cls, cfg: SecurityConfig) -> CurveClient | None:
        if not cfg.curve:
            return None
        return cls.from_files(cfg.client_secret_file, cfg.server_public_file)

    def apply(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE client (call before connect)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_public
