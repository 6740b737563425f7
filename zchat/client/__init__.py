"""The client side: ``Client`` (sockets, requests, heartbeat, recovery), the pure room
tracker it feeds, and one-shot probes. Imports the protocol, never the broker."""
