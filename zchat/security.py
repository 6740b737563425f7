"""CurveZMQ keys and ZAP authentication, through pyzmq's ``zmq.auth``.

- :func:`generate_keypair` writes ZeroMQ certificate files (``zchat keygen``).
- :func:`load_server` reads the broker's secret certificate (``--secret-key``).
- :func:`client_curve` builds a client's :class:`~zchat.client.CurveKeys` from
  ``--server-key``/``--key``, creating the client's own pair on first use.
- :class:`BrokerAuth` runs the ZAP handler for the broker's whole life: an
  allow-list directory (``--allow``) or any key (open enrolment).
- :class:`HandshakeWatch` tells a client *why* nothing answered.

``zchat.client`` and ``zchat.broker`` import this module, so it imports them
only inside the functions that build their dataclasses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

if TYPE_CHECKING:
    from zchat.broker import CurveServer
    from zchat.client import CurveKeys

log = logging.getLogger("zchat.security")

#: Name of the client's own keypair under the config directory.
CLIENT_KEY_NAME = "client"
#: How long the start-up self-test waits for the broker to refuse an unknown key.
SELF_TEST_TIMEOUT = 5.0


class SecurityError(Exception):
    """A key file or directory is unusable; the message is one line for a person."""


@dataclass(frozen=True, slots=True)
class KeyFiles:
    public: Path
    secret: Path


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
    from zchat.broker import CurveServer

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
    from zchat.client import CurveKeys

    if server_key is None:
        if key is not None:
            raise SecurityError("--key needs --server-key (the broker's public key)")
        return None
    server_public = load_public(server_key)
    public, secret = load_secret(key) if key is not None else own_keypair(config_dir)
    return CurveKeys(server_public=server_public, public=public, secret=secret)


# ---------------------------------------------------------------- broker side


class BrokerAuth:
    """The ZAP handler of a CURVE broker: an allow list, or any key.

    libzmq asks it about every CURVE handshake on sockets with the same ZAP
    domain. It also makes the client's public key the ``User-Id`` of every
    message, which the broker binds nicks to; without a running handler the
    property would be missing. Keep the object for the broker's whole life:
    a garbage-collected authenticator stops answering.
    """

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], domain: str, allow: Path | None
    ) -> None:
        self.domain = domain
        self.allow = allow
        self._auth = ThreadAuthenticator(context, log=logging.getLogger("zchat.zap"))
        self._auth.start()
        try:
            self.reload()
        except BaseException:
            self._auth.stop()
            raise

    def reload(self) -> int:
        """(Re)read the allow-list directory; returns the number of keys (-1: any key)."""
        if self.allow is None:
            self._auth.configure_curve(domain=self.domain, location=zmq.auth.CURVE_ALLOW_ANY)
            return -1
        try:
            certs = zmq.auth.load_certificates(self.allow)
        except Exception as exc:
            raise SecurityError(f"cannot read the allow list {self.allow}: {exc}") from None
        # configure_curve logs and swallows a bad directory (then refuses every
        # key); reading it first above turns that into an error a person sees.
        self._auth.configure_curve(domain=self.domain, location=self.allow)
        return len(certs)

    @property
    def running(self) -> bool:
        return self._auth.is_alive()

    def stop(self) -> None:
        self._auth.stop()


def connectable(endpoint: str) -> str:
    """A bound endpoint as a local client can connect to it (wildcards to loopback)."""
    if endpoint.startswith("tcp://0.0.0.0:"):
        return "tcp://127.0.0.1:" + endpoint.rsplit(":", 1)[1]
    if endpoint.startswith("tcp://[::]:"):
        return "tcp://[::1]:" + endpoint.rsplit(":", 1)[1]
    return endpoint


def check_refuses_unknown(endpoint: str, server_public: bytes) -> None:
    """Prove that a CURVE handshake with a fresh, unlisted key is refused.

    Raises :class:`SecurityError` if it succeeds (the allow list is not in
    force) or if no verdict arrives in time. The handshake is handled by
    libzmq's I/O threads and the ZAP handler, so the broker's loop need not run.
    """
    target = connectable(endpoint)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        if target.startswith("tcp://["):
            dealer.setsockopt(zmq.IPV6, 1)
        public, secret = zmq.curve_keypair()
        dealer.setsockopt(zmq.CURVE_SERVERKEY, server_public)
        dealer.setsockopt(zmq.CURVE_PUBLICKEY, public)
        dealer.setsockopt(zmq.CURVE_SECRETKEY, secret)
        watch = HandshakeWatch(dealer)
        dealer.connect(target)
        verdict = watch.wait(SELF_TEST_TIMEOUT)
        watch.close()
    finally:
        ctx.destroy(linger=0)
    if verdict == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return
    if verdict == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        raise SecurityError("self-test: a key missing from the allow list was accepted")
    raise SecurityError(f"self-test: no verdict on an unknown key from {target}")


# ---------------------------------------------------------------- client side


_VERDICTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED,
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
)


class HandshakeWatch:
    """Handshake events of one socket, to say why a connection never worked.

    Attach before ``connect``; :meth:`diagnose` reads what happened so far
    without waiting. Always :meth:`close` it before the socket's context ends.
    """

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self._sock = sock
        self._address = f"inproc://zchat-handshake-{id(self):x}-{time.monotonic_ns()}"
        sock.monitor(self._address, zmq.EVENT_CONNECTED | sum(_VERDICTS))
        # A plain socket on the same context, even for an asyncio socket: we
        # only ever read it without blocking.
        self._mon: zmq.Socket[bytes] | None = zmq.Context.shadow(sock.context.underlying).socket(
            zmq.PAIR
        )
        self._mon.setsockopt(zmq.LINGER, 0)
        self._mon.connect(self._address)
        self.events: list[tuple[int, int]] = []

    def _read(self, timeout: float = 0.0) -> bool:
        if self._mon is None or not self._mon.poll(int(timeout * 1000)):
            return False
        while True:
            try:
                frames = self._mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            event = parse_monitor_message(frames)
            self.events.append((int(event["event"]), int(event["value"])))

    def wait(self, timeout: float) -> int | None:
        """Block until a handshake verdict (an ``EVENT_HANDSHAKE_*``) or the deadline."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self._read(left)
            for event, _ in self.events:
                if event in _VERDICTS:
                    return event
        return None

    def diagnose(self, *, curve: bool) -> str | None:
        """A hint for a person about why no broker answered, if the events tell."""
        self._read()
        kinds = {event for event, _ in self.events}
        if zmq.EVENT_HANDSHAKE_FAILED_AUTH in kinds:
            return "the broker refused our key: ask its operator to allow our .key file"
        if zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL in kinds:
            if curve:
                return "the broker does not use CURVE: drop --server-key"
            return "the broker requires CURVE encryption: pass --server-key FILE"
        if zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL in kinds:
            if curve:
                return "the CURVE handshake failed: is --server-key the broker's public key?"
            return "the handshake failed: does the broker require --server-key?"
        if zmq.EVENT_HANDSHAKE_SUCCEEDED in kinds:
            return None
        if zmq.EVENT_CONNECTED in kinds:
            return "connected, but no handshake completed"
        return None

    def close(self) -> None:
        if self._mon is None:
            return
        with contextlib.suppress(zmq.ZMQError):  # the socket may be closed already
            self._sock.disable_monitor()
        self._mon.close(0)
        self._mon = None
