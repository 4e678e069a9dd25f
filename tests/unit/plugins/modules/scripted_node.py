# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test equipment: a node whose commands are real processes, for the modules' time bounds.

``ScriptedNode`` writes ``nvidia-smi``, ``dpkg-query`` and ``systemctl`` as small shell scripts in a temporary
directory. They answer from the real H200 captures (nvidia-smi) or with fixed text; the one command named by
``hang`` records its pid and ``exec``s ``sleep`` (one process, as a hung nvidia-smi is: no child keeps a pipe
open), bounded at ``HANG_SECONDS``. ``run_real`` runs a module's ``main()`` with AnsibleModule's real
``run_command``, so the bound under test is the one the module applies on a node. ``HangingNvml`` is the fake
pynvml whose chosen call blocks until the test ends.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from mig_module_harness import H200, H200_QUERY, ModuleExit, query_line

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils import _nvml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils"))
from fake_pynvml import FakeNvml

HANG_SECONDS = 30  # a hung command outlives every bound the tests set; the module must kill it well before

# what each scripted command prints; the keys name them in ``hang``
SMI_COMMANDS = {
    "query": "--query-gpu=*",
    "lgipp": "'mig -lgipp'",
    "lgip": "'mig -lgip'",
    "lgi": "'mig -lgi'",
    "lci": "'mig -lci'",
    "compute_apps": "--query-compute-apps=*",
}


class ScriptedNode:
    """nvidia-smi, dpkg-query and systemctl as real scripts; ``hang`` names the one that hangs
    (a key of SMI_COMMANDS, ``dpkg-query``, ``systemctl``) and ``slow`` maps one to seconds it takes."""

    def __init__(self, root: Path, hang: Optional[str] = None, slow: Optional[Dict[str, float]] = None) -> None:
        self.bin = root / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.pidfile = root / "hung.pid"
        self.hang = hang
        self.slow = slow or {}
        query = root / "query.csv"
        query.write_text(query_line(H200_QUERY), encoding="utf-8")
        answers = {
            "query": f"cat {shlex.quote(str(query))}",
            "lgipp": f"cat {shlex.quote(str(H200 / 'nvidia-smi_mig_-lgipp.txt'))}",
            "lgip": f"cat {shlex.quote(str(H200 / 'nvidia-smi_mig_-lgip.txt'))}",
            "lgi": "echo 'No MIG-enabled devices found.'",
            "lci": "echo 'No MIG-enabled devices found.'",
            "compute_apps": "echo '4242, tritonserver, GPU-00000000-1111-2222-3333-444444444444'",
        }
        arms = "".join(f"    {SMI_COMMANDS[key]}) {self._act(key, answer)} ;;\n" for key, answer in answers.items())
        self._script("nvidia-smi", f'case "$*" in\n{arms}    *) echo "scripted nvidia-smi: no answer for $*" >&2; exit 2 ;;\nesac\n')
        self._script("dpkg-query", self._act("dpkg-query", "printf 'installed 0.13.0-1'") + "\n")
        shown = "Id=nvidia-mig-manager.service\\nLoadState=loaded\\nUnitFileState=enabled\\nActiveState=inactive\\n"
        self._script("systemctl", self._act("systemctl", f"printf '{shown}'") + "\n")

    def _act(self, key: str, answer: str) -> str:
        if key == self.hang:
            return f"echo $$ > {shlex.quote(str(self.pidfile))}; exec sleep {HANG_SECONDS}"
        if key in self.slow:
            return f"sleep {self.slow[key]}; {answer}"
        return answer

    def _script(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text("#!/bin/sh\n# scripted node command (test equipment)\n" + body, encoding="utf-8")
        path.chmod(0o755)

    @property
    def nvidia_smi(self) -> str:
        return str(self.bin / "nvidia-smi")

    def hung_pid(self) -> Optional[int]:
        return int(self.pidfile.read_text(encoding="utf-8")) if self.pidfile.exists() else None

    def hung_process_left(self) -> bool:
        """Whether the hung command still exists (a zombie counts: it was not reaped)."""
        pid = self.hung_pid()
        return pid is not None and os.path.exists(f"/proc/{pid}")


class HangingNvml(FakeNvml):
    """The fake pynvml whose ``hang_call`` blocks (until ``release()`` or HANG_SECONDS), as a hung driver does."""

    def __init__(self, *args: Any, hang_call: str = "nvmlDeviceGetMigMode", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hang_call = hang_call
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()

    def _enter(self, call: str, gpu_index: int | None = None) -> None:
        super()._enter(call, gpu_index)
        if call == self.hang_call:
            self.released.wait(HANG_SECONDS)


def hanging_nvml(hang_call: str = "nvmlDeviceGetMigMode") -> HangingNvml:
    base = FakeNvml.from_profiles_json(H200 / "nvml_profiles.json")
    fake = HangingNvml(hang_call=hang_call)
    fake.gpus = base.gpus
    return fake


RunReal = Callable[..., ModuleExit]


@pytest.fixture
def run_real(monkeypatch: pytest.MonkeyPatch) -> RunReal:
    """Run ``main`` with ``args`` on a ScriptedNode: real processes, real run_command; returns the exit."""

    def _run(main: Callable[[], None], args: Dict[str, Any], node: ScriptedNode, nvml: Optional[FakeNvml] = None) -> ModuleExit:
        def exit_json(self: Any, **kwargs: Any) -> None:
            raise ModuleExit(False, kwargs)

        def fail_json(self: Any, msg: str, **kwargs: Any) -> None:
            raise ModuleExit(True, dict(kwargs, msg=msg))

        def get_bin_path(self: Any, name: str, required: bool = False, opt_dirs: Optional[List[str]] = None) -> Optional[str]:
            path = node.bin / name
            return str(path) if path.exists() else None

        monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
        monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
        monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", get_bin_path)
        if nvml is None:
            monkeypatch.setattr(_nvml, "available", lambda: False)
        else:
            real_collect = _nvml.collect
            monkeypatch.setattr(_nvml, "available", lambda: True)
            monkeypatch.setattr(_nvml, "collect", lambda nvml_module=None, timeout=None: real_collect(nvml, timeout=timeout))
        started = time.monotonic()
        try:
            with patch_module_args(args), pytest.raises(ModuleExit) as exc:
                main()
        finally:
            if isinstance(nvml, HangingNvml):
                nvml.release()
        exc.value.result["_seconds"] = time.monotonic() - started
        json.dumps(exc.value.result)
        return exc.value

    return _run
