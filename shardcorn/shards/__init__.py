"""Shards: binding sockets, serving one shard on its own loop, and the launcher that runs them."""
