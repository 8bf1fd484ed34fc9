"""``--reload``: a parent that watches source files and restarts the child process that serves.

The parent never imports the app, so each child imports the code as it is on disk now. The
parent binds the listening socket once and every child serves it as an inherited ``--fd``:
the port (also one picked for port 0) stays the same across restarts, and a connection that
arrives while one child stops and the next starts waits in the accept queue instead of being
refused.

Signals. Ctrl+C reaches the whole foreground process group, the child included. Were the
child to act on it too, the parent's own SIGTERM would be its second signal, which forces an
exit and skips lifespan shutdown. So the child leaves SIGINT to the parent: its handler does
nothing (a handler, not SIG_IGN, so processes the app starts still get Ctrl+C by default),
and the parent stops it with one SIGTERM, or two if the user asks twice.

The child gets its Config (it pickles, by design) over a pipe rather than on its command
line, where ``--ssl-keyfile-password`` would show in ``ps``; its stdin stays the terminal,
so a debugger in the app works.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from shardcorn.config import Config
from shardcorn.logs import error_log
from shardcorn.shards import launcher
from shardcorn.shards.sockets import BindError, bind_sockets

EXIT_BAD_SETTING = 2
EXIT_STARTUP = 1
# Seconds to wait for a child, beyond its own --timeout-graceful-shutdown, before SIGKILL.
STOP_MARGIN = 5.0

# uvicorn's defaults, so a project's --reload-include/--reload-exclude mean the same here.
DEFAULT_INCLUDES = ("*.py",)
DEFAULT_EXCLUDES = (".*", ".py[cod]", ".sw.*", "~*")

_CHILD_CODE = "from shardcorn.shards.reload import child_main; child_main()"


class SourceFilter:
    """Which changed paths restart the server: --reload-include minus --reload-exclude.

    A pattern the user includes is taken out of the default excludes and the other way
    round, as uvicorn does; an exclude naming an existing directory covers all below it.
    Directories nobody edits by hand (.git, __pycache__, .venv, node_modules, ...) are
    skipped by watchfiles' own DefaultFilter first.
    """

    def __init__(self, includes: Sequence[str], excludes: Sequence[str]) -> None:
        from watchfiles import DefaultFilter

        self.default_filter = DefaultFilter()
        self.includes = [p for p in DEFAULT_INCLUDES if p not in excludes] + list(includes)
        self.excludes: list[str] = [p for p in DEFAULT_EXCLUDES if p not in includes]
        self.exclude_dirs: list[Path] = []
        for pattern in excludes:
            if Path(pattern).is_dir():
                self.exclude_dirs.append(Path(pattern).resolve())
            else:
                self.excludes.append(pattern)

    def __call__(self, change: Any, path: str) -> bool:
        if not self.default_filter(change, path):
            return False
        candidate = Path(path)
        if not any(candidate.match(pattern) for pattern in self.includes):
            return False
        if any(directory in candidate.parents for directory in self.exclude_dirs):
            return False
        return not any(candidate.match(pattern) for pattern in self.excludes)


def watched_dirs(config: Config) -> list[Path]:
    """--reload-dir (each must exist), or the working directory; nested ones only once."""
    given = config.reload_dirs or (os.getcwd(),)
    for directory in given:
        if not os.path.isdir(directory):
            raise NotADirectoryError(f"--reload-dir {directory}: not a directory")
    unique = sorted({Path(directory).resolve() for directory in given})
    return [d for d in unique if not any(other in d.parents for other in unique)]


def run_with_reload(config: Config) -> int:
    """Serve ``config`` in a child process, restarted whenever a watched file changes."""
    try:
        import watchfiles  # noqa: F401 - an optional dependency
    except ImportError:
        error_log.error("--reload needs watchfiles: pip install 'shardcorn[reload]'")
        return EXIT_BAD_SETTING
    try:
        dirs = watched_dirs(config)
    except NotADirectoryError as exc:
        error_log.error("%s", exc)
        return EXIT_BAD_SETTING
    try:
        sock = bind_sockets(config, 1)[0]
    except BindError as exc:
        error_log.error("%s", exc)
        return EXIT_STARTUP
    try:
        child_config = config.replace(reload=False, uds=None, fd=sock.fileno())
        source_filter = SourceFilter(config.reload_includes, config.reload_excludes)
        return Reloader(child_config, sock.fileno(), dirs, source_filter).run()
    finally:
        sock.close()
        if config.uds is not None and os.path.exists(config.uds):
            os.unlink(config.uds)


class Reloader:
    """Runs one child at a time on the inherited listening socket ``fd``."""

    def __init__(
        self, child_config: Config, fd: int, dirs: list[Path], source_filter: SourceFilter
    ) -> None:
        self.config = child_config
        self.fd = fd
        self.dirs = dirs
        self.filter = source_filter
        self.stopping = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            error_log.info(
                "Will watch for changes in %s", ", ".join(repr(str(d)) for d in self.dirs)
            )
            error_log.info("Started reloader process [%d] using WatchFiles", os.getpid())
            self._start_child()
            for changes in self._changes():
                error_log.warning(
                    "WatchFiles detected changes in %s. Reloading...",
                    ", ".join(sorted(_display(path) for path in changes)),
                )
                self._stop_child()
                if self.stopping.is_set():
                    break  # a signal came while the old child was stopping
                self._start_child()
        finally:
            self._stop_child()  # also when watching failed: never leave a child behind
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        error_log.info("Stopping reloader process [%d]", os.getpid())
        return 0

    def _changes(self) -> Iterator[set[str]]:
        from watchfiles import watch

        # step: how long the tree must stay quiet before we restart, so an editor that
        # writes several files (or one file twice) causes one restart, not several.
        step = max(50, int(self.config.reload_delay * 1000))
        for changes in watch(
            *self.dirs,
            watch_filter=self.filter,
            step=step,
            stop_event=self.stopping,
            raise_interrupt=False,
            ignore_permission_denied=True,
        ):
            if self.stopping.is_set():
                return
            yield {path for _, path in changes}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping.is_set() and self.child is not None and self.child.poll() is None:
            # Asked twice: a second SIGTERM makes the child give up its graceful shutdown.
            self.child.send_signal(signal.SIGTERM)
        self.stopping.set()

    def _start_child(self) -> None:
        read_end, write_end = os.pipe()
        try:
            self.child = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, str(read_end)],
                pass_fds=(read_end, self.fd),
            )
        finally:
            os.close(read_end)
        with os.fdopen(write_end, "wb") as pipe:
            pickle.dump(self.config, pipe)

    def _stop_child(self) -> None:
        child = self.child
        if child is None:
            return
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(self.config.timeout_graceful_shutdown + STOP_MARGIN)
        except subprocess.TimeoutExpired:
            error_log.warning("Child process [%d] did not stop: killing it", child.pid)
            child.kill()
            child.wait()
        # Cleared only now: a second signal during the wait still reaches the child.
        self.child = None


def _display(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _leave_sigint_to_parent(signum: int, frame: FrameType | None) -> None:
    """The child's SIGINT handler: the parent got the same Ctrl+C and will stop us."""


def child_main() -> None:
    """Entry point of a reload child: read the Config from the pipe and serve it."""
    with os.fdopen(int(sys.argv[1]), "rb") as pipe:
        config: Config = pickle.load(pipe)
    signal.signal(signal.SIGINT, _leave_sigint_to_parent)
    sys.exit(launcher.run(config, stop_signals=(signal.SIGTERM,)))
