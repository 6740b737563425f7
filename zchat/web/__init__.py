"""``zchat web``: a browser gateway on the same broker (``serve`` runs one)."""

from __future__ import annotations

import asyncio
import logging
import socket

from zchat.web.gateway import Gateway, WebConfig, create_app, parse_listen

__all__ = ["Gateway", "WebConfig", "bind", "create_app", "parse_listen", "serve", "serve_async"]

log = logging.getLogger("zchat.web")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one); ``OSError`` says why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_async(
    config: WebConfig, sock: socket.socket, started: asyncio.Event | None = None
) -> None:
    """Serve on ``sock`` until SIGINT/SIGTERM (or ``should_exit`` on the server)."""
    import uvicorn

    gateway = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            gateway.app,
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
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        log.info("zchat web listening on http://%s:%d (broker %s)", shown, port, config.router)
        if started is not None:
            started.set()
    try:
        await task
    finally:
        await gateway.close_all()


def serve(config: WebConfig) -> int:
    """Run the gateway in the foreground; the exit code for the command line."""
    try:
        sock = bind(config.host, config.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror or exc)
        return 1
    try:
        asyncio.run(serve_async(config, sock))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0
