"""Per-connection protocols: HTTP/1.1 on httptools, WebSocket on wsproto, lifespan, adapters."""
