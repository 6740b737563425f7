"""Cluster mode: several brokers as one chat, sharing rooms, nicks and history in Redis.

``keys`` names every Redis key (pure), ``scripts`` holds the Lua that makes each
room's step atomic, ``engine`` talks to Redis (a single server or a Redis Cluster).
See docs/cluster.md.
"""
