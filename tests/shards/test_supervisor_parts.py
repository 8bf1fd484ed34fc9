"""The supervisor's parts that need no server: backoff, the tcp_migrate_req warning, the
control pipe, and a replacement's stats moving into its slot's block."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest

from shardcorn.metrics import stats as slots
from shardcorn.metrics.store import StatsStore
from shardcorn.shards import control, supervisor
from shardcorn.shards.control import HandoffStats, ShardControl
from shardcorn.shards.handles import describe_exit
from shardcorn.shards.supervisor import backoff, migrate_req_warning


def test_backoff_starts_at_once_then_doubles_up_to_a_cap() -> None:
    delays = [backoff(n) for n in range(10)]
    assert delays[:6] == [0.0, 0.0, 0.5, 1.0, 2.0, 4.0]
    assert max(delays) == supervisor.MAX_BACKOFF == backoff(100)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("0\n", "is 0: closing a SO_REUSEPORT listener resets"),
        ("1\n", None),
        (None, "Linux < 5.14"),
    ],
)
def test_migrate_req_warning_says_what_the_setting_means(
    content: str | None, expected: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tcp_migrate_req"
    if content is not None:
        path.write_text(content)
    monkeypatch.setattr(supervisor, "MIGRATE_REQ", str(path))
    warning = migrate_req_warning()
    if expected is None:
        assert warning is None
    else:
        assert warning is not None and expected in warning
        assert "SIGTTOU" in warning


def test_exits_are_described_for_the_log() -> None:
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(None) == "was abandoned"


def test_a_successor_adds_its_counts_to_the_slot_and_takes_the_gauges() -> None:
    store = StatsStore(1)
    old = store.writer(0)
    old.shard_started()
    for _ in range(5):
        old.connection_opened()
        old.request_started(reused=False)
        old.request_finished("GET", 200, 0.01)
    old.connection_opened()  # still open when the old shard goes
    new = HandoffStats()
    new.shard_started()
    for _ in range(3):
        new.connection_opened()
        new.request_started(reused=True)
        new.request_finished("GET", 200, 0.02)
    new.connection_closed()
    reader = store.reader(0)
    assert reader.requests() == {("GET", 200): 5}  # the successor counts privately so far
    new.adopt(store.block(0))
    assert reader.requests() == {("GET", 200): 8}
    assert reader.get(slots.CONNECTIONS_ACCEPTED) == 9
    assert reader.get(slots.KEEPALIVE_REUSED) == 3
    assert reader.get(slots.CONNECTIONS_OPEN) == 2  # the successor's, not the old shard's 6
    assert reader.get(slots.SHARD_UP) == 1
    assert reader.duration_sum() == pytest.approx(0.11)
    new.request_started(reused=False)
    new.request_finished("POST", 201, 0.0)
    assert reader.requests()[("POST", 201)] == 1  # it writes the slot's block from now on
    new.adopt(store.block(0))  # a second ADOPT changes nothing
    assert reader.requests() == {("GET", 200): 8, ("POST", 201): 1}
    del reader, old, new
    store.close()


class _FakeShard:
    def __init__(self) -> None:
        self.stops: list[tuple[bool, bool]] = []
        self.ctx = None

    def stop(self, force: bool = False, handoff: bool = False) -> None:
        self.stops.append((force, handoff))


def test_the_shard_end_of_the_pipe_answers_pings_and_stops_when_the_launcher_goes() -> None:
    launcher, shard_end = multiprocessing.Pipe()
    loop = asyncio.new_event_loop()
    shard = _FakeShard()
    shard_control = ShardControl(shard_end, index=3)
    try:
        shard_control.attach(shard, loop)  # type: ignore[arg-type]
        assert launcher.recv()[0] == control.HELLO
        control.send(launcher, control.PING, 7)
        control.send(launcher, control.STOP, False, True)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert launcher.poll(5) and launcher.recv() == (control.PONG, 7)
        assert shard.stops == [(False, True)]
        launcher.close()  # the launcher dies: the shard stops on its own
        loop.run_until_complete(asyncio.sleep(0.05))
        assert shard.stops == [(False, True), (False, False)]
    finally:
        shard_control.detach()
        loop.close()
        shard_end.close()


def test_messages_waiting_on_a_pipe_are_read_without_blocking() -> None:
    a, b = multiprocessing.Pipe()
    try:
        assert control.receive_all(b) == ([], False)
        control.send(a, control.READY, "uvloop")
        control.send(a, control.RETIRE, 10)
        a.close()
        assert control.receive_all(b) == ([(control.READY, "uvloop"), (control.RETIRE, 10)], True)
        assert control.send(a, control.PING, 1) is False
    finally:
        b.close()
