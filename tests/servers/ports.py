# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Free TCP ports for test servers on loopback addresses."""
from __future__ import annotations

import socket
from typing import List, Sequence


def common_free_ports(hosts: Sequence[str], count: int) -> List[int]:
    """``count`` TCP ports free on every one of ``hosts`` (pods of one Service listen on the same ports)."""
    chosen: List[int] = []
    for _attempt in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        ok = port not in chosen
        for host in hosts[1:]:
            with socket.socket() as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    ok = False
        if ok:
            chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise RuntimeError(f"no {count} ports free on all of {hosts}")
