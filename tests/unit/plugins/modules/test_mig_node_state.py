# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mig_node_state: one read of GPUs, OS family, package, files, units and GPU processes, against a node whose
nvidia-smi replays real captures and whose dpkg-query/rpm/systemctl answer in their real output formats."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
from ansible.module_utils import basic
from mig_module_harness import FIXTURES, FakeNode, ModuleExit, h200_node

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils import _node_state
from ansible_collections.gpu_ops.mig_serving.plugins.modules import mig_info, mig_node_state

if not FIXTURES.is_dir():
    pytest.skip(f"nvidia-smi fixtures not found at {FIXTURES}", allow_module_level=True)

RunModule = Callable[..., ModuleExit]

# systemctl show --property=Id,LoadState,UnitFileState,ActiveState -- a b: one block per unit, blank-line separated
SYSTEMCTL_SHOW = """Id=nvidia-mig-manager.service
LoadState=loaded
ActiveState=inactive
UnitFileState=enabled

Id=tritonserver.service
LoadState=not-found
ActiveState=inactive
UnitFileState=
"""


class Node(FakeNode):
    """nvidia-smi from captures, plus the system tools answering as given: {argv[0]: (rc, stdout, stderr)}."""

    def __init__(self, smi: FakeNode, tools: Dict[str, Tuple[int, str, str]]) -> None:
        super().__init__(smi.outputs)
        self.tools = tools

    def run_command(self, argv: List[str], **kwargs: Any) -> Tuple[int, str, str]:
        tool = os.path.basename(argv[0])
        if tool in self.tools:
            assert kwargs.get("environ_update", {}).get("LC_ALL") == "C"
            self.calls.append([tool, *argv[1:]])
            return self.tools[tool]
        return super().run_command(argv, **kwargs)


@pytest.fixture(autouse=True)
def debian(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mig_node_state, "read_os_family", lambda: "Debian")


def test_one_read_returns_what_mig_info_returns_and_the_rest(run_module: RunModule, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"version: v1\nmig-configs: {}\n")
    config.chmod(0o640)
    missing = tmp_path / "absent.conf"
    node = Node(h200_node(), {"dpkg-query": (0, "installed 0.13.0-1", ""), "systemctl": (0, SYSTEMCTL_SHOW, "")})
    res = run_module(
        mig_node_state.main,
        {"backend": "nvidia_smi", "package": "nvidia-mig-manager", "files": [str(config), str(missing), str(tmp_path)],
         "units": ["nvidia-mig-manager.service", "tritonserver.service"]},
        node,
    )
    assert not res.failed, res.result
    info = run_module(mig_info.main, {"backend": "nvidia_smi"}, h200_node())
    assert res.result["gpus"] == info.result["gpus"]
    assert res.result["os_family"] == "Debian"
    assert res.result["package_version"] == "0.13.0-1"
    assert res.result["changed"] is False
    state = res.result["files"][str(config)]
    assert state["checksum"] == hashlib.sha1(b"version: v1\nmig-configs: {}\n").hexdigest()  # nosec B324
    assert (state["mode"], state["isdir"], state["uid"]) == ("0640", False, os.getuid())
    assert res.result["files"][str(missing)] == {"exists": False}
    assert res.result["files"][str(tmp_path)]["isdir"] is True
    assert "checksum" not in res.result["files"][str(tmp_path)]
    assert res.result["units"] == {
        "nvidia-mig-manager.service": {"load_state": "loaded", "unit_file_state": "enabled", "active_state": "inactive"},
        "tritonserver.service": {"load_state": "not-found", "unit_file_state": "", "active_state": "inactive"},
    }
    assert res.result["systemd_running"] is True
    assert "compute_apps" not in res.result
    # one systemctl call for all units, one dpkg-query
    assert [c[0] for c in node.calls if c[0] in ("systemctl", "dpkg-query")] == ["dpkg-query", "systemctl"]
    assert ["dpkg-query", "--show", "--showformat=${db:Status-Status} ${Version}", "nvidia-mig-manager"] in node.calls


@pytest.mark.parametrize(
    ("answer", "version"),
    [
        ((1, "", "dpkg-query: no packages found matching nvidia-mig-manager\n"), ""),
        ((0, "config-files 0.12.1-1", ""), ""),  # removed, its conffiles left: not installed
        ((0, "installed 1:0.13.0-1ubuntu2", ""), "1:0.13.0-1ubuntu2"),
    ],
)
def test_package_not_installed_or_removed(run_module: RunModule, answer: Tuple[int, str, str], version: str) -> None:
    node = Node(h200_node(), {"dpkg-query": answer})
    res = run_module(mig_node_state.main, {"gpus": False, "package": "nvidia-mig-manager"}, node)
    assert not res.failed, res.result
    assert res.result["package_version"] == version
    assert "gpus" not in res.result
    assert not [c for c in node.calls if c[0] not in ("dpkg-query",)], "gpus=false must not touch the GPUs"


def test_rpm_family(run_module: RunModule, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mig_node_state, "read_os_family", lambda: "RedHat")
    node = Node(h200_node(), {"rpm": (0, "0.13.0-1", "")})
    res = run_module(mig_node_state.main, {"gpus": False, "package": "nvidia-mig-manager"}, node)
    assert res.result["package_version"] == "0.13.0-1"
    assert node.calls == [["rpm", "-q", "--queryformat", "%{VERSION}-%{RELEASE}", "nvidia-mig-manager"]]
    node = Node(h200_node(), {"rpm": (1, "package nvidia-mig-manager is not installed\n", "")})
    assert run_module(mig_node_state.main, {"gpus": False, "package": "nvidia-mig-manager"}, node).result["package_version"] == ""


def test_a_broken_package_database_is_an_error_naming_the_step(run_module: RunModule) -> None:
    node = Node(h200_node(), {"dpkg-query": (2, "", "dpkg-query: error: parsing file '/var/lib/dpkg/status' near line 4\n")})
    res = run_module(mig_node_state.main, {"gpus": False, "package": "nvidia-mig-manager"}, node)
    assert res.failed
    assert res.result["msg"].startswith("Reading the node's state: reading the installed version of nvidia-mig-manager: dpkg-query --show")
    assert "parsing file '/var/lib/dpkg/status'" in res.result["msg"]


def test_without_systemd_as_pid1_unit_files_are_read_from_disk(run_module: RunModule) -> None:
    calls: List[List[str]] = []

    class NoSystemd(Node):
        def run_command(self, argv: List[str], **kwargs: Any) -> Tuple[int, str, str]:
            if os.path.basename(argv[0]) != "systemctl":
                return super().run_command(argv, **kwargs)
            calls.append(["systemctl", *argv[1:]])
            if argv[1] == "show":
                return 1, "", "System has not been booted with systemd as init system (PID 1). Can't operate.\nFailed to connect to bus: Host is down\n"
            if argv[-1] == "nvidia-mig-manager.service":
                return 0, "enabled\n", ""
            return 1, "", f"Failed to get unit file state for {argv[-1]}: No such file or directory\n"

    res = run_module(mig_node_state.main, {"gpus": False, "units": ["nvidia-mig-manager.service", "tritonserver.service"]},
                     NoSystemd(h200_node(), {}))
    assert not res.failed, res.result
    assert res.result["systemd_running"] is False
    assert res.result["units"] == {
        "nvidia-mig-manager.service": {"load_state": "loaded", "unit_file_state": "enabled", "active_state": "unknown"},
        "tritonserver.service": {"load_state": "not-found", "unit_file_state": "", "active_state": "unknown"},
    }
    assert calls[1] == ["systemctl", "--root=/", "is-enabled", "--", "nvidia-mig-manager.service"]


def test_a_node_without_systemctl_reports_units_unknown(run_module: RunModule, monkeypatch: pytest.MonkeyPatch) -> None:
    def main_without_systemctl() -> None:  # after the harness has patched the module's tool lookup
        monkeypatch.setattr(basic.AnsibleModule, "get_bin_path",
                            lambda self, name, required=False, opt_dirs=None: None if name == "systemctl" else f"/usr/bin/{name}")
        mig_node_state.main()

    res = run_module(main_without_systemctl, {"gpus": False, "units": ["nvidia-mig-manager.service"]}, Node(h200_node(), {}))
    assert not res.failed, res.result
    assert res.result["systemd_running"] is False
    assert res.result["units"] == {"nvidia-mig-manager.service": {"load_state": "unknown", "unit_file_state": "", "active_state": "unknown"}}


def test_compute_apps(run_module: RunModule) -> None:
    smi = h200_node()
    smi.outputs["--query-compute-apps="] = "4242, tritonserver, GPU-00000000-1111-2222-3333-444444444444\n"
    res = run_module(mig_node_state.main, {"gpus": False, "compute_apps": True}, Node(smi, {}))
    assert res.result["compute_apps"] == [{"pid": "4242", "process_name": "tritonserver", "gpu_uuid": "GPU-00000000-1111-2222-3333-444444444444"}]
    smi.outputs["--query-compute-apps="] = "No running processes found\n"
    assert run_module(mig_node_state.main, {"gpus": False, "compute_apps": True}, Node(smi, {})).result["compute_apps"] == []
    smi.outputs["--query-compute-apps="] = "4242 tritonserver\n"
    res = run_module(mig_node_state.main, {"gpus": False, "compute_apps": True}, Node(smi, {}))
    assert res.failed
    assert "unexpected nvidia-smi --query-compute-apps line" in res.result["msg"]


@pytest.mark.parametrize(
    ("text", "family"),
    [
        ('PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n', "Debian"),
        ('NAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n', "Debian"),
        ('NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\n', "RedHat"),
        ('NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\n', "RedHat"),
        ("# comment\nID=arch\n", "Arch"),
    ],
)
def test_os_family(text: str, family: str) -> None:
    assert _node_state.os_family(_node_state.parse_os_release(text)) == family


def test_read_os_family_names_the_files_when_none_is_readable(tmp_path: Path) -> None:
    with pytest.raises(_node_state.NodeStateError, match="cannot tell the OS family"):
        _node_state.read_os_family((str(tmp_path / "none"),))
