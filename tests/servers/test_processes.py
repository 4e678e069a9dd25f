# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/servers/processes.py: a stopped server leaves nothing of its process group running, within its bounds."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
if TYPE_CHECKING:
    from tests.servers.processes import PortTaken, group_members, port_taken, start_retrying_port, stop_process_group
else:
    from servers.processes import PortTaken, group_members, port_taken, start_retrying_port, stop_process_group

# a leader that starts two children in its group, then waits; optionally deaf to SIGTERM (as a stuck server is)
LEADER = "import subprocess, sys, time\n{trap}kids = [subprocess.Popen(['sleep', '60']) for _ in range(2)]\nprint('up', flush=True)\ntime.sleep(60)\n"


def start(ignore_term: bool) -> subprocess.Popen[str]:
    trap = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else ""
    proc = subprocess.Popen([sys.executable, "-c", LEADER.format(trap=trap)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "up\n"  # its children run
    proc.stdout.close()
    return proc


def test_group_members_lists_the_leader_and_its_children() -> None:
    proc = start(ignore_term=False)
    try:
        members: List[int] = group_members(proc.pid)
        assert proc.pid in members
        assert len(members) == 3
    finally:
        stop_process_group(proc.pid, proc=proc, timeout=5)


def test_a_server_that_exits_on_sigterm_is_reaped_and_its_group_killed() -> None:
    proc = start(ignore_term=False)
    started = time.monotonic()
    stop_process_group(proc.pid, proc=proc, timeout=5)
    assert proc.returncode == -signal.SIGTERM
    assert group_members(proc.pid) == [], "the children of the group are gone too"
    assert time.monotonic() - started < 5


def test_a_server_deaf_to_sigterm_is_killed_after_its_timeout() -> None:
    proc = start(ignore_term=True)
    started = time.monotonic()
    stop_process_group(proc.pid, proc=proc, timeout=0.5)
    assert proc.returncode == -signal.SIGKILL
    assert group_members(proc.pid) == []
    assert 0.5 <= time.monotonic() - started < 5


def test_stopping_by_pid_alone_and_twice() -> None:
    proc = start(ignore_term=False)
    stop_process_group(proc.pid, timeout=5)  # reaped through its PID
    assert group_members(proc.pid) == []
    proc.wait(timeout=1)  # the Popen learns it is gone


def test_a_zombie_is_not_a_running_member() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not exit within 10 s"
        time.sleep(0.01)
    assert group_members(proc.pid) == []
    proc.wait(timeout=1)


@pytest.mark.parametrize(("output", "taken"), [
    ("ts=... caller=main.go msg=\"Error listening\" err=\"listen tcp 127.0.0.1:41234: bind: address already in use\"", True),
    ("dnsmasq: failed to create listening socket for 127.0.0.153: Address already in use", True),
    ("E1204 Failed to start HTTP service: Unavailable - Socket '127.0.0.1:8000' already in use", True),
    ("level=info msg=\"Server is ready to receive web requests.\"", False),
])
def test_port_taken(output: str, taken: bool) -> None:
    assert port_taken(output) is taken


class _FakeServer:
    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


def test_start_retrying_port_starts_again_then_gives_up() -> None:
    started: list[_FakeServer] = []

    def start() -> _FakeServer:
        started.append(_FakeServer())
        return started[-1]

    def taken_twice(server: _FakeServer) -> None:
        if len(started) < 3:
            raise PortTaken

    assert start_retrying_port(start, taken_twice, attempts=3, name="x", output=lambda s: "") is started[-1]
    assert [s.stopped for s in started] == [True, True, False]

    def always_taken(server: _FakeServer) -> None:
        raise PortTaken

    started.clear()
    with pytest.raises(RuntimeError, match="x: the port was taken on each of 2 attempts:\nlog"):
        start_retrying_port(start, always_taken, attempts=2, name="x", output=lambda s: "log")
    assert [s.stopped for s in started] == [True, True]

    def broken(server: _FakeServer) -> None:
        raise OSError("no binary")

    started.clear()
    with pytest.raises(OSError, match="no binary"):
        start_retrying_port(start, broken, attempts=3, name="x", output=lambda s: "")
    assert [s.stopped for s in started] == [True]
