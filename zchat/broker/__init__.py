"""The broker side: the pure core (``core``, ``rooms``, ``state``), its store, and the
socket adapter, ZAP, metrics and ``serve`` around it. Imports the protocol, never the client."""
