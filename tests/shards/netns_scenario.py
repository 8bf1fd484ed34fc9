"""Run inside a fresh network namespace (``unshare -n``): SIGTTOU under fresh-connection load.

``python netns_scenario.py MODE MIGRATE`` brings up ``lo``, sets ``net.ipv4.tcp_migrate_req``
to MIGRATE (the namespace's own copy: the machine's setting is never touched), starts a
3-shard server, keeps fresh connections coming, removes a shard with SIGTTOU, and prints one
JSON line: the load's counts and whether the server warned about the setting.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tests.shards.helpers import log_lines, serve_shards  # noqa: E402
from tests.shards.load import Load  # noqa: E402


def main() -> None:
    mode, migrate = sys.argv[1], sys.argv[2]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    Path("/proc/sys/net/ipv4/tcp_migrate_req").write_text(migrate)
    with serve_shards(mode, shards=3) as server:
        with Load(server.host, server.port, keepalive=0, fresh=8) as load:
            load.wait_requests(500)
            server.send_signal(signal.SIGTTOU)
            log_lines(server, "Shard 2 removed: 2 shards", timeout=30)
            load.wait_requests(500)
        server.send_signal(signal.SIGTERM)
        code = server.wait(30)
        warned = "tcp_migrate_req is 0" in server.log
    result = load.result
    print(
        json.dumps(
            {
                "ok": result.ok,
                "failed": result.failed,
                "errors": dict(result.errors),
                "shards": len(result.shards),
                "warned": warned,
                "exit": code,
            }
        )
    )


if __name__ == "__main__":
    main()
