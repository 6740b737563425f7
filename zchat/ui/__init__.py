"""Front ends on the client library: typed input, rendering, line mode, the terminal UI,
bots and the stats table. Imports the client, never the broker."""
