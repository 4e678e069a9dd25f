# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stopping a test server by PID, bounded, leaving nothing of it running.

Every server here is started with ``start_new_session=True``: its PID is also its process group, which holds
whatever it started (nginx workers, Triton's python backend stubs). ``stop_process_group`` signals the server,
waits for it (bounded), kills it if needed, then kills what is left of its group and waits (bounded) until the
group is empty. It raises when something still runs after that, naming it: a test never leaves a process behind
silently.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Protocol, Sequence, TypeVar

POLL_S = 0.02  # exit of a process that is not our child cannot be waited for: it is polled
KILL_WAIT_S = 5.0  # after SIGKILL


def group_members(pgid: int) -> List[int]:
    """The processes of process group ``pgid`` that still run (zombies, which run nothing, are left out)."""
    members: List[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended while we looked
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, the fields after the last ')' do not
        fields = text[text.rfind(")") + 2:].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return sorted(members)


def _gone(pid: int, proc: Optional[subprocess.Popen[Any]]) -> bool:
    """Whether ``pid`` has ended; reaps it when it is our child (through its Popen when given: status kept)."""
    if proc is not None:
        return proc.poll() is not None
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (or reaped already): look it up
        return pid not in _running(pid)
    return done == pid


def _running(pid: int) -> List[int]:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return [] if state[state.rfind(")") + 2:].split()[0] in ("Z", "X") else [pid]


def _wait(pid: int, proc: Optional[subprocess.Popen[Any]], seconds: float) -> bool:
    """Whether ``pid`` ended within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not _gone(pid, proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def stop_process_group(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 10.0, name: str = "server",
                       proc: Optional[subprocess.Popen[Any]] = None) -> None:
    """Send ``sig`` to ``pid``, wait up to ``timeout`` s for it to exit, SIGKILL it if it has not; then SIGKILL what
    is left of its process group and wait up to KILL_WAIT_S until none of it runs. RuntimeError if some still does.
    ``proc``: the Popen that started it, which then reaps it (its returncode is set)."""
    if proc is None or proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    if not _wait(pid, proc, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _wait(pid, proc, KILL_WAIT_S):
            raise RuntimeError(f"{name} (pid {pid}) still runs {timeout + KILL_WAIT_S:.0f} s after {signal.Signals(sig).name} and SIGKILL")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while group_members(pid):
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{name} (pid {pid}) exited, but processes {group_members(pid)} of its group still run after SIGKILL")
        time.sleep(POLL_S)


PORT_ATTEMPTS = 3  # a server given a free port (port 0) that another process took meanwhile is started again on another


def port_taken(output: str) -> bool:
    """Whether a server's output says its port was taken (between asking the OS for a free one and binding it)."""
    return re.search(r"address already in use|already in use|address in use", output, re.IGNORECASE) is not None


class PortTaken(Exception):
    """A server lost the port the OS offered it to another process before it bound it."""


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_S = TypeVar("_S", bound=_Stoppable)


def start_retrying_port(start: Callable[[], _S], wait: Callable[[_S], None], *, attempts: int, name: str,
                        output: Callable[[_S], str]) -> _S:
    """``start()`` a server and ``wait`` until it serves; when ``wait`` raises PortTaken, stop it and start again (on
    new free ports), ``attempts`` times in all. Any other failure stops the server and is raised as it is."""
    for attempt in range(1, attempts + 1):
        server = start()
        try:
            wait(server)
            return server
        except PortTaken:
            server.stop()
            if attempt == attempts:
                raise RuntimeError(f"{name}: the port was taken on each of {attempts} attempts:\n{output(server)}") from None
        except BaseException:
            server.stop()
            raise
    raise ValueError(f"{name}: attempts must be at least 1, got {attempts}")


@contextlib.contextmanager
def http_process(argv: Sequence[str], log: Path, url: str, *, name: str, ready: Callable[[str], bool] = lambda _body: True,
                 timeout: float = 20.0) -> Iterator[None]:
    """Run ``argv`` in its own process group with its output in ``log``; return once GET ``url`` answers 200 with a
    body for which ``ready`` holds (polled every 0.1 s, at most ``timeout`` s; AssertionError with the log's tail when it
    exits or the time runs out); stop it with stop_process_group on leaving."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200 and ready(resp.read().decode()):
                        break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{name} not ready at {url} within {timeout:.0f} s: " + log.read_text()[-3000:]
            time.sleep(0.1)
        yield
    finally:
        stop_process_group(proc.pid, timeout=10.0, name=name, proc=proc)
