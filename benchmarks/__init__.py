"""zchat's benchmark suite: ``python -m benchmarks`` (or ``--quick`` for a smoke run).

Every figure is measured in the same run as its reference (raw pyzmq, plain
echo, Redis, NATS, a threaded socket server) and reported as a ratio, because
the machines it runs on are small and shared. See docs/benchmarks.md.
"""
