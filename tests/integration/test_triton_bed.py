# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Triton test bed itself (tests/servers/triton.py): two real tritonserver processes on loopback.

Each answers HTTP inference through tritonclient with the input echoed back, and publishes the queue-time
counter the recording rule is built on.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.servers.triton import triton_server, write_model_repository
else:
    from servers.triton import triton_server, write_model_repository

pytestmark = pytest.mark.slow

# tritonclient ships no type information: typed as Any on purpose
httpclient: Any = importlib.import_module("tritonclient.http")


def test_two_servers_echo_and_publish_queue_metrics(tmp_path: Path) -> None:
    repo = write_model_repository(tmp_path / "models", delay_ms=5)
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(triton_server(repo)) for _index in range(2)]
        assert len({s.http_port for s in servers}) == 2
        for index, server in enumerate(servers):
            client = httpclient.InferenceServerClient(url=server.http_url)
            data = np.arange(4, dtype=np.float32) + index
            inp = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
            inp.set_data_from_numpy(data)
            result = client.infer("sleeper", [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT0")])
            out = result.as_numpy("OUTPUT0")
            assert out is not None
            np.testing.assert_array_equal(out, data)
            client.close()
            with urllib.request.urlopen(server.metrics_url, timeout=5) as resp:
                text = resp.read().decode()
            assert 'nv_inference_queue_duration_us{model="sleeper",version="1"}' in text, text[:2000]
        pids = [s.pid for s in servers]
    for pid in pids:  # stopped by PID on exit
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
