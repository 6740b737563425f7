"""CURVE for zchat: key types, ZeroMQ certificate files, and applying keys to a socket.

- :func:`generate_keypair` writes ZeroMQ certificate files (``zchat keygen``).
- :func:`load_server` reads the broker's secret certificate (``--secret-key``).
- :func:`client_curve` builds a client's :class:`CurveKeys` from
  ``--server-key``/``--key``, creating the client's own pair on first use.
- :func:`apply_client` and :func:`apply_server` set the socket options, the only
  place that does.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

from zchat.errors import SecurityError

log = logging.getLogger("zchat.curve")

#: Name of the client's own keypair under the config directory.
CLIENT_KEY_NAME = "client"


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """CURVE keys for the client: the broker's public key and our own pair (z85)."""

    server_public: bytes
    public: bytes
    secret: bytes


@dataclass(frozen=True, slots=True)
class CurveServer:
    """The broker's CURVE secret key; turns on encryption on both sockets."""

    public: bytes
    secret: bytes
    #: ZAP domain; authentication itself is set up by ``zchat.broker.auth``.
    domain: str = "zchat"
    #: Directory of accepted client certificates; None accepts any key (open enrolment).
    allow: Path | None = None


@dataclass(frozen=True, slots=True)
class KeyFiles:
    public: Path
    secret: Path


def apply_client(sock: zmq.Socket[Any], keys: CurveKeys | None) -> None:
    """Make ``sock`` a CURVE client of the broker (nothing for plaintext); before connect."""
    if keys is None:
        return
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)


def apply_server(sock: zmq.Socket[Any], server: CurveServer) -> None:
    """Make ``sock`` a CURVE server that asks the ZAP handler; before bind."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, server.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, server.public)
    sock.setsockopt_string(zmq.ZAP_DOMAIN, server.domain)
    # Without a ZAP handler, refuse every handshake instead of accepting any key.
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


# ---------------------------------------------------------------- key files


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\x00" in name:
        raise SecurityError(f"bad key name {name!r}: use a plain file name such as 'broker'")


def _make_private_dir(directory: Path) -> None:
    """Create ``directory`` (0700) if missing; refuse a path that is not a directory."""
    if directory.exists():
        if not directory.is_dir():
            raise SecurityError(f"{directory} exists and is not a directory")
        return
    try:
        directory.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise SecurityError(f"cannot create {directory}: {exc.strerror or exc}") from None
    # mkdir's mode is filtered by the umask; the directory holds secrets.
    directory.chmod(0o700)


def generate_keypair(directory: Path, name: str, *, force: bool = False) -> KeyFiles:
    """Write ``NAME.key`` and ``NAME.key_secret`` (0600) in ``directory``.

    The pair is written into a private temporary directory first and renamed
    into place, so the secret is never readable by others, not even briefly
    (``create_certificates`` writes with the process umask).
    """
    _check_name(name)
    _make_private_dir(directory)
    files = KeyFiles(directory / f"{name}.key", directory / f"{name}.key_secret")
    if not force:
        for path in (files.public, files.secret):
            if path.exists():
                raise SecurityError(f"{path} exists; pass --force to replace it")
    try:
        staging = Path(tempfile.mkdtemp(prefix=".zchat-keygen-", dir=directory))
    except OSError as exc:
        raise SecurityError(f"cannot write in {directory}: {exc.strerror or exc}") from None
    try:
        public, secret = zmq.auth.create_certificates(staging, name)
        os.chmod(secret, 0o600)
        os.chmod(public, 0o644)
        os.replace(secret, files.secret)
        os.replace(public, files.public)
    except OSError as exc:
        raise SecurityError(f"cannot write keys in {directory}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return files


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise SecurityError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    except Exception:
        raise SecurityError(f"{path} is not a ZeroMQ certificate (zchat keygen)") from None
    for key in (public, secret):
        if key is not None and not _valid_z85_key(key):
            raise SecurityError(f"{path} holds a malformed key")
    return public, secret


def _valid_z85_key(key: bytes) -> bool:
    if len(key) != 40:
        return False
    try:
        return len(z85.decode(key)) == 32
    except Exception:
        return False


def load_public(path: Path) -> bytes:
    """The z85 public key of a certificate file (either file of a pair)."""
    return _load(path)[0]


def load_secret(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file."""
    public, secret = _load(path)
    if secret is None:
        raise SecurityError(f"{path} has no secret key: pass the .key_secret file")
    return public, secret


def load_server(secret_file: Path, allow: Path | None = None) -> CurveServer:
    """The broker's CURVE settings from its secret certificate and allow-list directory."""
    public, secret = load_secret(secret_file)
    if allow is not None:
        if not allow.is_dir():
            raise SecurityError(f"allow list {allow} is not a directory")
        if not os.access(allow, os.R_OK | os.X_OK):
            raise SecurityError(f"cannot read the allow list {allow}")
    return CurveServer(public, secret, allow=allow)


def default_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/zchat``, else ``~/.config/zchat``."""
    base = os.environ.get("XDG_CONFIG_HOME")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "zchat"


def own_keypair(config_dir: Path | None = None) -> tuple[bytes, bytes]:
    """The client's own (public, secret): read from the config dir, made on first use."""
    directory = config_dir or default_config_dir()
    secret_file = directory / f"{CLIENT_KEY_NAME}.key_secret"
    if not secret_file.exists():
        files = generate_keypair(directory, CLIENT_KEY_NAME)
        log.info("created the client keypair %s", files.secret)
    return load_secret(secret_file)


def client_curve(
    server_key: Path | None, key: Path | None, *, config_dir: Path | None = None
) -> CurveKeys | None:
    """CURVE keys for a client, or None for plaintext (no ``server_key``).

    ``key`` is the client's ``.key_secret`` file; without it the pair under
    the user's config directory is used, created on first use.
    """
    if server_key is None:
        if key is not None:
            raise SecurityError("--key needs --server-key (the broker's public key)")
        return None
    server_public = load_public(server_key)
    public, secret = load_secret(key) if key is not None else own_keypair(config_dir)
    return CurveKeys(server_public=server_public, public=public, secret=secret)
