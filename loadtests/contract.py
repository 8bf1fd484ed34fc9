"""What the locustfiles and the runner agree on, in a module that does not import Locust.

Importing ``locust`` monkey-patches the standard library with gevent, so the runner (which
must stay a plain CPython process that starts and stops subprocesses) never imports a
locustfile. The few facts both sides need live here instead.
"""

from __future__ import annotations

# Locust's request_type for WebSocket events. The runner leaves these rows out of the HTTP
# total: a WebSocket handshake is not counted as an HTTP request by the exporter.
WS_REQUEST_TYPE = "WS"

# The failure message a locustfile gives a 503 from ``--limit-concurrency``. Locust keeps
# failures keyed by message, so the runner can tell a rejection by design from a real failure
# by looking for this text in the failures CSV, and count the rejections exactly.
REJECTED_BY_DESIGN = "503 rejected by --limit-concurrency (by design)"

# Upload body sizes: 1 KiB arrives in one read; 128 KiB is larger than a loopback segment
# (64 KiB MTU), so the server assembles the body from several reads and its flow control is
# exercised. Much larger bodies would make a 2-core run measure memcpy, not the server.
UPLOAD_SIZES = (1_024, 16_384, 131_072)

# The Locust name of the WebSocket opening handshake. Every other "WS" row is one message
# round trip (one message in and one out at the server), which is what the runner compares
# with ``shardcorn_websocket_messages_total``.
WS_CONNECT_NAME = "/ws connect"

# ``locustfiles/final_csv.py`` writes Locust's final statistics to ``PREFIX_final_*.csv``
# (Locust's own ``--csv`` files can be a second stale); the runner reads those.
FINAL_CSV_SUFFIX = "_final"
