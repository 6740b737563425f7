"""``zchat web``: a browser gateway on the same broker (``serve`` runs one)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn

from zchat.errors import StartError
from zchat.web.gateway import Gateway, WebConfig, create_app, parse_listen

__all__ = ["Gateway", "WebConfig", "WebServer", "bind", "create_app", "parse_listen", "serve"]

log = logging.getLogger("zchat.web")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one); ``OSError`` says why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say
    # so, and accepted ones inherit it; without, Nagle adds ~40 ms to each reply.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class WebServer:
    """The gateway under uvicorn, on a socket bound beforehand (so port 0 works)."""

    def __init__(self, config: WebConfig, sock: socket.socket) -> None:
        self.config = config
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.gateway = create_app(config)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.gateway.app,
                log_config=None,
                access_log=False,
                server_header=False,
                # The gateway checks each message against its own, lower, limit and
                # answers with a clear error; this cap only stops a runaway frame.
                ws_max_size=max(4 * config.max_message, 64 * 1024),
                # Deflate would cost each connection its own zlib state (memory).
                ws_per_message_deflate=False,
                lifespan="off",
            )
        )

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGINT/SIGTERM (in the main thread) or ``stop()``."""
        if not log.isEnabledFor(logging.DEBUG):
            # uvicorn logs every WebSocket opened and closed: a line per page load.
            logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        # uvicorn has no startup callback; it flips `started` once it accepts.
        while not self.server.started and not task.done():
            await asyncio.sleep(0.01)
        if self.server.started:
            host = self.sock.getsockname()[0]
            shown = f"[{host}]" if ":" in host else host
            log.info(
                "zchat web listening on http://%s:%d (broker %s)",
                shown,
                self.port,
                self.config.router,
            )
            if ready is not None:
                ready()
        try:
            await task
        finally:
            await self.gateway.close_all()

    def stop(self) -> None:
        """Ask the server to stop (from any thread: uvicorn polls the flag)."""
        self.server.should_exit = True


def serve(config: WebConfig) -> None:
    """Serve in the foreground until SIGINT/SIGTERM; ``StartError`` if it cannot listen."""
    try:
        sock = bind(config.host, config.port)
    except OSError as exc:
        reason = exc.strerror or exc
        raise StartError(f"cannot listen on {config.host}:{config.port}: {reason}") from None
    # uvicorn stops on SIGINT/SIGTERM, then raises the signal again for the
    # handler it found: a no-op one turns a requested stop into exit code 0.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        asyncio.run(WebServer(config, sock).run())
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(signum: int, frame: FrameType | None) -> None:
    log.info("zchat web stopped (%s)", signal.Signals(signum).name)
