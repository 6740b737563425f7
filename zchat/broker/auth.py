"""The broker's ZAP side: the CURVE allow list, and the start-up self-test that proves it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from zchat.curve import CurveKeys, apply_client
from zchat.errors import SecurityError
from zchat.handshake import HandshakeWatch

log = logging.getLogger("zchat.security")

#: How long the start-up self-test waits for the broker to refuse an unknown key.
SELF_TEST_TIMEOUT = 5.0


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
        self._auth = _CountingAuthenticator(context, log=logging.getLogger("zchat.zap"))
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
    def refused(self) -> int:
        """Handshakes refused since the start (read from any thread)."""
        return self._auth.refused

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
        apply_client(dealer, CurveKeys(server_public, public, secret))
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


class _CountingAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler, counting and logging each refusal: a refused client
    hears nothing but a closed connection, so the broker's log is where an
    operator finds out. Runs on the authenticator's thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused = 0
        self._address = ""

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # The reply below knows the verdict but not the peer: remember it here.
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)

    def _send_zap_reply(
        self, request_id: bytes, status_code: bytes, status_text: bytes, user_id: str = "anonymous"
    ) -> None:
        if status_code != b"200":
            self.refused += 1
            count = self.refused
            # The first few, then every power of two: a key-guessing flood stays a few lines.
            if count <= 10 or count & (count - 1) == 0:
                log.warning(
                    "refused a CURVE handshake from %s: %s (%d so far)",
                    self._address,
                    status_text.decode("utf-8", "replace"),
                    count,
                )
        super()._send_zap_reply(request_id, status_code, status_text, user_id)
