"""Where a ``say`` spends the broker's Python thread, stage by stage, compiled and pure.

    python -m benchmarks.stages                 # both paths, a table
    python -m benchmarks.stages --json FILE     # and the figures

Each path runs in a child process of its own (``ZCHAT_PURE=1`` for the pure one), which
times, per ``say`` (100 bytes of text, no id, rate limit off, as in the fan-out run):

- *recv*: what the adapter does to read one envelope from its ROUTER (routing id,
  frame without copying, ``.more``, ``.bytes``), with envelopes queued by a DEALER;
- *unpack*: ``wire.unpack`` of the frame;
- *validate*: the rest of ``BrokerCore.receive`` up to the publish: session lookup,
  the fast path's field checks, dispatch (``receive`` less the other stages);
- *handler*: ``Rooms.publish_packed``: seq, store, counters, the output;
- *pack*: the ``msg`` map and ``wire.pack``;
- *send*: one PUB send of the broker's frame with 10 subscribers connected.

``receive`` is also timed whole; stages are timed apart, in loops of ``n`` calls, the
best of ``rounds`` rounds and of ``reps`` processes per path, alternated (the machine
is shared: the minimum is the least disturbed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from benchmarks.common import BenchError
from benchmarks.fanout import ROOM, TEXT, sample
from hatch_build import HOT
from zchat import native
from zchat.broker.core import BrokerCore
from zchat.broker.state import BrokerConfig, Output
from zchat.protocol import pack, unpack
from zchat.protocol.wire import msg_envelope

PEER = b"\x00\x6b\x8b\x45\x67"
STAGES = ("recv", "unpack", "validate", "handler", "pack", "send")
#: Timed in the child processes; ``validate`` is derived from their best figures.
TIMED = ("receive", "recv", "unpack", "handler", "pack", "send")


def best(call: Callable[[], None], n: int, rounds: int) -> float:
    """Microseconds per call of ``call`` (which itself makes ``n`` calls), best round."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return min(times) / n * 1e6


def core_stages(n: int, rounds: int) -> dict[str, float]:
    core = BrokerCore(BrokerConfig(rate_limit=0, history=500), now=1.0)
    hello = {"type": "hello", "v": 1, "nick": "sender", "rooms": [ROOM]}
    core.receive(PEER, pack(hello), 1.0)
    say = pack({"type": "say", "room": ROOM, "text": TEXT})
    room = core.rooms.rooms[ROOM]
    receive = core.receive
    now = 2.0

    def whole() -> None:
        for _ in range(n):
            receive(PEER, say, now)

    def unpacking() -> None:
        for _ in range(n):
            unpack(say)

    def packing() -> None:
        for _ in range(n):
            pack(msg_envelope(ROOM, "sender", TEXT, now, 7, False, None))

    data = pack(msg_envelope(ROOM, "sender", TEXT, now, 7, False, None))
    publish = core.rooms.publish_packed

    def handling() -> None:
        out: list[Output] = []
        for _ in range(n):
            publish(room, data, out)
        out.clear()

    whole()  # warm: the room's history is full from here on, as in a long run
    return {
        "receive": best(whole, n, rounds),
        "unpack": best(unpacking, n, rounds),
        "handler": best(handling, n, rounds),
        "pack": best(packing, n, rounds),
    }


def with_validate(figures: dict[str, Any]) -> dict[str, Any]:
    """``validate``: ``receive`` less the stages inside it, so the rows add up."""
    inside = figures["unpack"] + figures["handler"] + figures["pack"]
    return {**figures, "validate": max(0.0, figures["receive"] - inside)}


def socket_stages(n: int, rounds: int, subscribers: int = 10) -> dict[str, float]:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.RCVHWM, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.SNDHWM, 0)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub_port = pub.bind_to_random_port("tcp://127.0.0.1")
    subs = []
    for _ in range(subscribers):
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{pub_port}")
        subs.append(sub)
    say, frame = sample()
    # Every subscriber connected and subscribed: each has seen a frame.
    pending = set(subs)
    deadline = time.monotonic() + 30
    while pending:
        if time.monotonic() > deadline:
            raise BenchError(f"{len(pending)} subscribers never saw a probe")
        pub.send(b"probe")
        for sub in list(pending):
            if sub.poll(10):
                pending.discard(sub)
    for sub in subs:
        while sub.poll(0):
            sub.recv()

    clock = time.perf_counter
    # The clock's own cost, taken off every timed read below.
    t0 = clock()
    for _ in range(n):
        clock()
    overhead = (clock() - t0) / n
    recv_times = []
    for _ in range(rounds):
        for _ in range(n):
            dealer.send(say)
        # Only reads that found an envelope waiting are timed: not the wait for the
        # DEALER's bytes to arrive.
        spent = 0.0
        read = 0
        while read < n:
            started = clock()
            try:
                router.recv(zmq.NOBLOCK)
            except zmq.Again:
                router.poll(1000)
                continue
            data = router.recv(copy=False)
            while data.more:
                data = router.recv(copy=False)
            data.bytes  # noqa: B018
            spent += clock() - started - overhead
            read += 1
        recv_times.append(spent)
    send = pub.send

    def sending() -> None:
        for _ in range(n):
            send(frame, zmq.NOBLOCK)

    figures = {"recv": min(recv_times) / n * 1e6, "send": best(sending, n, rounds)}
    for sock in (router, dealer, pub, *subs):
        sock.close(0)
    ctx.term()
    return figures


#: Subsets of the hot modules, each compiled alone in a copy of ``zchat/`` (``--sets``).
SETS: dict[str, tuple[str, ...]] = {
    "none (pure)": (),
    "protocol, ratelimit": ("ratelimit", "protocol/names", "protocol/wire"),
    "broker/core": ("broker/core",),
    "broker": ("broker/state", "broker/sessions", "broker/rooms", "broker/core"),
    "all 7 (installed)": tuple(p.removeprefix("zchat/").removesuffix(".py") for p in HOT),
}


def per_call(n: int, rounds: int) -> dict[str, float]:
    """Microseconds per ``receive`` of a say, a say with an id, a ping, a ``who`` (the
    full decoder's path), at the default rate limit."""
    core = BrokerCore(BrokerConfig(history=500), now=1.0)
    core.receive(PEER, pack({"type": "hello", "v": 1, "nick": "s", "rooms": [ROOM]}), 1.0)
    frames = {
        "say": [pack({"type": "say", "room": ROOM, "text": TEXT})],
        "say with id": [
            pack({"type": "say", "room": ROOM, "text": TEXT, "id": f"m{i}"}) for i in range(1000)
        ],
        "ping": [pack({"type": "ping"})],
        "who": [pack({"type": "who", "room": ROOM})],
    }
    clock = [2.0]
    figures = {}
    for name, batch in frames.items():

        def run(batch: list[bytes] = batch) -> None:
            receive = core.receive
            for i in range(n):
                # A tenth of a second apart: the rate limit never refuses.
                clock[0] += 0.1
                receive(PEER, batch[i % len(batch)], clock[0])

        figures[name] = best(run, n, rounds)
    return figures


def module_sets(n: int, rounds: int, reps: int) -> dict[str, dict[str, float]]:
    """Each of ``SETS`` compiled with this environment's mypyc, then timed, alternated."""
    root = Path(__file__).resolve().parent.parent
    work = Path(tempfile.mkdtemp(prefix="zchat-sets-"))
    results: dict[str, dict[str, float]] = {}
    try:
        for i, modules in enumerate(SETS.values()):
            copy = work / str(i)
            ignore = shutil.ignore_patterns("*.so", "_compiled.json", "__pycache__")
            shutil.copytree(root / "zchat", copy / "zchat", ignore=ignore)
            if modules:
                paths = [f"zchat/{m}.py" for m in modules]
                mypyc = Path(sys.executable).with_name("mypyc")
                subprocess.run(
                    [str(mypyc), "--ignore-missing-imports", *paths],
                    cwd=copy,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
        code = "import json, sys; from benchmarks.stages import per_call; "
        code += f"print(json.dumps(per_call({n}, {rounds})))"
        for _ in range(reps):
            for i, name in enumerate(SETS):
                env = {**os.environ, "PYTHONPATH": f"{work / str(i)}{os.pathsep}{root}"}
                env.pop(native.PURE_ENV, None)
                done = subprocess.run(
                    [sys.executable, "-c", code],
                    env=env,
                    cwd=work / str(i),
                    stdout=subprocess.PIPE,
                    check=True,
                    text=True,
                )
                figures = json.loads(done.stdout)
                kept = results.setdefault(name, figures)
                for key, value in figures.items():
                    kept[key] = min(kept[key], value)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def one(n: int, rounds: int) -> dict[str, Any]:
    return {
        "path": native.describe(),
        **core_stages(n, rounds),
        **socket_stages(min(n, 20_000), rounds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages", description=__doc__)
    parser.add_argument("--n", type=int, default=50_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3, help="child processes per path, alternated")
    parser.add_argument("--one", action="store_true", help="this process's path only (JSON)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--sets", action="store_true", help="receive per call with subsets of the modules compiled"
    )
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.n, args.rounds)))
        return 0
    if args.sets:
        sets = module_sets(min(args.n, 20_000), args.rounds, args.reps)
        kinds = list(next(iter(sets.values())))
        print(f"{'us per receive':<22}" + "".join(f"{k:>13}" for k in kinds))
        for name, figures in sets.items():
            print(f"{name:<22}" + "".join(f"{figures[k]:>13.2f}" for k in kinds))
        if args.json:
            args.json.write_text(json.dumps(sets, indent=1) + "\n")
        return 0
    results: dict[str, dict[str, Any]] = {}
    command = [sys.executable, "-m", "benchmarks.stages", "--one"]
    command += ["--n", str(args.n), "--rounds", str(args.rounds)]
    # Alternated, and the best of each stage kept: load from other work falls on both alike.
    for _ in range(args.reps):
        for path, pure in (("compiled", "0"), ("pure", "1")):
            done = subprocess.run(
                command,
                env={**os.environ, native.PURE_ENV: pure},
                stdout=subprocess.PIPE,
                check=True,
                text=True,
            )
            figures = json.loads(done.stdout)
            if figures["path"].startswith("compiled") != (path == "compiled"):
                raise BenchError(f"the {path} child ran {figures['path']}")
            kept = results.setdefault(path, figures)
            for stage in TIMED:
                kept[stage] = min(kept[stage], figures[stage])
    results = {path: with_validate(figures) for path, figures in results.items()}
    print(f"{'us per say':<10} {'compiled':>9} {'pure':>9}")
    for stage in (*STAGES, "receive"):
        row = [results[p][stage] for p in ("compiled", "pure")]
        print(f"{stage:<10} {row[0]:>9.3f} {row[1]:>9.3f}")
    for path, figures in results.items():
        print(f"{path}: {figures['path']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
