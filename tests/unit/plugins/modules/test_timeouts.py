# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every command mig_info, mig_verify and mig_node_state run is bounded by their ``timeout`` option: a hung command
fails the module within the bound, naming the command and the limit, and is killed (no process left); a slow one
inside the bound is waited for. Real processes (tests/unit/plugins/modules/scripted_node.py), real run_command."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Dict

import pytest
from mig_module_harness import FIXTURES, ModuleExit
from scripted_node import HANG_SECONDS, RunReal, ScriptedNode, hanging_nvml

from ansible_collections.gpu_ops.mig_serving.plugins.doc_fragments._gpu_backend import ModuleDocFragment
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils import _gpu_reader
from ansible_collections.gpu_ops.mig_serving.plugins.modules import mig_info, mig_node_state, mig_verify

if not FIXTURES.is_dir():
    pytest.skip(f"nvidia-smi fixtures not found at {FIXTURES}", allow_module_level=True)

LAYOUT = [{"devices": "all", "mig-enabled": False}]
SMI_SHOWN = {
    "query": "nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,pci.device_id,pci.sub_device_id,mig.mode.current,mig.mode.pending --format=csv,noheader",
    "lgip": "nvidia-smi mig -lgip",
    "lgipp": "nvidia-smi mig -lgipp",
}
BOUND = 1  # seconds: each hang test takes about this long


def _assert_bounded(res: ModuleExit, node: ScriptedNode, shown: str, limit: int = BOUND) -> None:
    assert res.failed, res.result
    assert f"{shown} did not finish within {limit} s (timeout) and was killed" in res.result["msg"]
    assert res.result["_seconds"] < limit + 4, f"the module waited {res.result['_seconds']:.1f} s for a {limit} s bound"
    assert node.hung_pid() is not None, "the scripted command never hung: the test proves nothing"
    assert not node.hung_process_left(), f"the hung command (pid {node.hung_pid()}) is still there"
    assert "run_bounded" not in getattr(signal.getsignal(signal.SIGALRM), "__qualname__", ""), "the SIGALRM handler was not restored"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "the alarm was left armed"


@pytest.mark.parametrize("hang", ["query", "lgip", "lgipp"])
def test_mig_info_hung_nvidia_smi_fails_within_the_bound(run_real: RunReal, tmp_path: Path, hang: str) -> None:
    node = ScriptedNode(tmp_path, hang=hang)
    res = run_real(mig_info.main, {"backend": "nvidia_smi", "nvidia_smi_path": node.nvidia_smi, "timeout": BOUND}, node)
    _assert_bounded(res, node, SMI_SHOWN[hang])
    assert res.result["msg"].startswith("Reading the node's GPUs: reading GPUs through nvidia-smi: ")
    assert "the NVIDIA driver may be hung" in res.result["msg"]


def test_mig_verify_hung_nvidia_smi_fails_within_the_bound(run_real: RunReal, tmp_path: Path) -> None:
    node = ScriptedNode(tmp_path, hang="lgip")
    args = {"layout": LAYOUT, "config": "off", "backend": "nvidia_smi", "nvidia_smi_path": node.nvidia_smi, "timeout": BOUND}
    res = run_real(mig_verify.main, args, node)
    _assert_bounded(res, node, "nvidia-smi mig -lgip")
    assert res.result["msg"].startswith("Verifying MIG layout 'off': reading the node's GPUs: ")


@pytest.mark.parametrize(
    ("hang", "args", "step", "shown"),
    [
        ("lgipp", {}, "reading the GPUs", "nvidia-smi mig -lgipp"),
        ("dpkg-query", {"package": "nvidia-mig-manager"}, "reading the installed version of nvidia-mig-manager", "dpkg-query --show"),
        ("systemctl", {"units": ["nvidia-mig-manager.service"]}, "reading the systemd units", "systemctl show --property="),
        ("compute_apps", {"gpus": False, "compute_apps": True}, "listing the processes holding the GPUs", "nvidia-smi --query-compute-apps="),
    ],
)
def test_mig_node_state_bounds_every_command(
    run_real: RunReal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hang: str, args: Dict[str, Any], step: str, shown: str
) -> None:
    monkeypatch.setattr(mig_node_state, "read_os_family", lambda: "Debian")
    node = ScriptedNode(tmp_path, hang=hang)
    res = run_real(mig_node_state.main, {"backend": "nvidia_smi", "nvidia_smi_path": node.nvidia_smi, "timeout": BOUND, **args}, node)
    assert res.failed, res.result
    assert res.result["msg"].startswith(f"Reading the node's state: {step}: "), res.result["msg"]
    assert shown in res.result["msg"]
    assert f"did not finish within {BOUND} s (timeout) and was killed" in res.result["msg"]
    assert res.result["_seconds"] < BOUND + 4
    assert not node.hung_process_left()


def test_a_slow_command_inside_the_bound_is_waited_for(run_real: RunReal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mig_node_state, "read_os_family", lambda: "Debian")
    node = ScriptedNode(tmp_path, slow={"lgip": 1.2, "compute_apps": 1.2})
    args = {"backend": "nvidia_smi", "nvidia_smi_path": node.nvidia_smi, "timeout": 5, "compute_apps": True, "package": "nvidia-mig-manager"}
    res = run_real(mig_node_state.main, args, node)
    assert not res.failed, res.result
    assert res.result["gpus"][0]["name"] == "NVIDIA H200"
    assert res.result["compute_apps"] == [{"pid": "4242", "process_name": "tritonserver", "gpu_uuid": "GPU-00000000-1111-2222-3333-444444444444"}]
    assert res.result["package_version"] == "0.13.0-1"
    assert res.result["_seconds"] >= 2.4  # both slow commands were waited for
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.parametrize("backend", ["nvml", "auto"])
def test_hung_nvml_fails_within_the_bound_naming_the_call(run_real: RunReal, tmp_path: Path, backend: str) -> None:
    node = ScriptedNode(tmp_path)
    fake = hanging_nvml("nvmlDeviceGetMigMode")
    res = run_real(mig_info.main, {"backend": backend, "nvidia_smi_path": node.nvidia_smi, "timeout": BOUND}, node, nvml=fake)
    assert res.failed, res.result
    assert "NVML call nvmlDeviceGetMigMode on GPU 0 did not return within 1 s (timeout)" in res.result["msg"]
    assert "the NVIDIA driver may be hung" in res.result["msg"]
    assert res.result["_seconds"] < BOUND + 2
    assert node.hung_pid() is None  # auto did not fall back to nvidia-smi on the same hung driver


def test_nvml_within_the_bound_is_unchanged(run_real: RunReal, tmp_path: Path) -> None:
    node = ScriptedNode(tmp_path)
    fake = hanging_nvml("nvmlDeviceGetNoSuchCall")  # nothing hangs
    res = run_real(mig_info.main, {"backend": "nvml", "timeout": 10}, node, nvml=fake)
    assert not res.failed, res.result
    assert res.result["backend"] == "nvml"
    assert res.result["gpus"][0]["supported_profiles"][0]["name"] == "1g.18gb"


@pytest.mark.parametrize("module", [mig_info, mig_verify, mig_node_state])
@pytest.mark.parametrize("value", [0, -5, 3601])
def test_a_bad_timeout_is_refused_before_any_command(run_real: RunReal, tmp_path: Path, module: Any, value: int) -> None:
    node = ScriptedNode(tmp_path, hang="query")
    args: Dict[str, Any] = {"backend": "nvidia_smi", "nvidia_smi_path": node.nvidia_smi, "timeout": value}
    if module is mig_verify:
        args.update(layout=LAYOUT, config="off")
    res = run_real(module.main, args, node)
    assert res.failed
    assert f"timeout must be a whole number of seconds from 1 to 3600, got {value}" in res.result["msg"]
    assert node.hung_pid() is None  # no command ran


def test_timeout_option_is_shared_and_documented() -> None:
    spec = _gpu_reader.gpu_backend_argument_spec()
    assert spec["timeout"] == {"type": "int", "default": 60}
    assert spec is not _gpu_reader.gpu_backend_argument_spec()  # a new copy per module
    assert "  timeout:\n" in ModuleDocFragment.DOCUMENTATION
    assert "    default: 60\n" in ModuleDocFragment.DOCUMENTATION


def test_hang_seconds_outlive_the_bound() -> None:
    assert HANG_SECONDS > BOUND + 10
