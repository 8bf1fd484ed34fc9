"""What is measured: each workload is an app, a request shape and the servers compared on it.

Every contender of a workload is measured in every round, one after another (A B A B ...), so
that slow drift of the machine (thermal, noisy neighbours) lands on all of them alike; ratios
are only ever taken between contenders of the same run.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.servers import GRANIAN, SHARDCORN, UVICORN, ServerKind

# The server gets core 0, wrk core 1: neither steals cycles from the other, and the server's
# req/s is what one core can do. On a 2-core machine this leaves nothing spare, which is why
# the benchmark should run on an otherwise idle machine.
SERVER_CPUS = "0"
WRK_CPUS = "1"
BOTH_CPUS = "0,1"

# shardcorn's default shard count may follow the CPU count; one shard is pinned explicitly so
# that every single-core comparison is one event loop against one event loop.
_ONE_SHARD = ("--shards", "1")


@dataclass(frozen=True)
class Contender:
    """One server configuration, one row of the results table."""

    label: str
    kind: ServerKind
    extra_args: tuple[str, ...] = ()
    server_cpus: str = SERVER_CPUS
    # Start with --metrics-port <free port>, and scrape /metrics once a second while measuring.
    metrics: bool = False


@dataclass(frozen=True)
class Workload:
    name: str
    app: str  # "module:attribute", as given to every server
    description: str
    contenders: tuple[Contender, ...]
    baseline: str  # label of the contender the others are divided by
    reading: str  # how to read the ratios of this workload
    post_size: int | None = None  # POST a body of this many bytes (through a wrk Lua script)
    # Times every contender is measured in each round (A B A B ...). The shardcorn-against-
    # itself pairs look for a few percent, below the spread of single windows on a shared
    # machine (±5 %), so they take more samples; they are also the cheapest to run.
    passes: int = 1


_PEERS = (
    Contender("shardcorn", SHARDCORN, _ONE_SHARD),
    Contender("uvicorn", UVICORN),
    Contender("granian", GRANIAN),
)
_PEER_READING = (
    "req/s ratio > 1 and CPU/req ratio < 1 mean faster and cheaper than uvicorn "
    "(httptools + uvloop) on the same core."
)


def _peer_workload(name: str, description: str, post_size: int | None = None) -> Workload:
    return Workload(
        name=name,
        app=f"bench.apps:{name}",
        description=description,
        contenders=_PEERS,
        baseline="uvicorn",
        reading=_PEER_READING,
        post_size=post_size,
    )


WORKLOADS: dict[str, Workload] = {
    workload.name: workload
    for workload in (
        _peer_workload("hello", 'raw ASGI, GET /, 13-byte "Hello, world!" text/plain'),
        _peer_workload("starlette", "the hello response through Starlette's PlainTextResponse"),
        _peer_workload("body64k", "raw ASGI, GET /, 64 KiB response body"),
        _peer_workload("echo1m", "raw ASGI, POST 1 MiB, echoed back", post_size=1024 * 1024),
        Workload(
            name="metrics",
            app="bench.apps:hello",
            description="hello on shardcorn with and without --metrics-port (scraped every 1 s)",
            contenders=(
                Contender("shardcorn", SHARDCORN, _ONE_SHARD),
                Contender("shardcorn+metrics", SHARDCORN, _ONE_SHARD, metrics=True),
            ),
            baseline="shardcorn",
            reading="the CPU/req change is the exporter's cost: counters plus 1 scrape a second.",
            passes=3,
        ),
        Workload(
            name="shards2",
            app="bench.apps:hello",
            description=(
                "hello on shardcorn, 1 shard on core 0 vs 2 shards on cores 0,1; "
                "wrk stays on core 1 and so shares it with the second shard"
            ),
            contenders=(
                Contender("shardcorn 1 shard", SHARDCORN, _ONE_SHARD),
                Contender("shardcorn 2 shards", SHARDCORN, ("--shards", "2"), BOTH_CPUS),
            ),
            baseline="shardcorn 1 shard",
            reading=(
                "CPU/req near 1 means sharding costs nothing per request; req/s is capped "
                "because wrk competes with shard 2 for core 1, so it understates scaling."
            ),
            passes=3,
        ),
    )
}
