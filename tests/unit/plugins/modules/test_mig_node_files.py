# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mig_node_files converges a node to one description of files, directories, links and units; mig_node_state's
``want`` compares the node with the same description. The two must agree: what the read reports as drift is exactly
what the converge (check mode or real) changes, and nothing after it.

The file system is a temporary directory (owned by whoever runs the test); systemctl is a fake that answers as
systemd 252 does (``systemctl show`` blocks, ``enable`` creating the symlink, ``daemon-reload``; without systemd as
PID 1: "System has not been booted with systemd as init system (PID 1). Can't operate.")."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from ansible.utils.hashing import checksum_s
from mig_module_harness import FakeNode, ModuleExit

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils import _node_files
from ansible_collections.gpu_ops.mig_serving.plugins.modules import mig_node_files, mig_node_state

RunModule = Callable[..., ModuleExit]
UNIT = "nvidia-mig-manager.service"
NOT_BOOTED = "System has not been booted with systemd as init system (PID 1). Can't operate.\nFailed to connect to bus: Host is down\n"


class Systemd(FakeNode):
    """systemctl only: unit file states kept here, every call recorded."""

    def __init__(self, states: Dict[str, str], booted: bool = True) -> None:
        super().__init__({})
        self.states = dict(states)  # unit -> unit file state; a unit not here does not exist
        self.booted = booted

    def run_command(self, argv: List[str], **kwargs: Any) -> Tuple[int, str, str]:
        assert kwargs.get("environ_update", {}).get("LC_ALL") == "C"
        assert os.path.basename(argv[0]) == "systemctl", argv
        args = argv[1:]
        self.calls.append(args)
        root = args[:1] == ["--root=/"]
        if root:
            args = args[1:]
        if not self.booted and not root:
            return 1, "", NOT_BOOTED
        if args[0] == "show":
            blocks = []
            for name in args[3:]:
                if name in self.states:
                    blocks.append(f"Id={name}\nLoadState=loaded\nActiveState=inactive\nUnitFileState={self.states[name]}\n")
                else:
                    blocks.append(f"Id={name}\nLoadState=not-found\nActiveState=inactive\nUnitFileState=\n")
            return 0, "\n".join(blocks), ""
        if args[0] == "daemon-reload":
            return 0, "", ""
        if args[0] in ("enable", "disable"):
            name = args[-1]
            if name not in self.states:
                return 1, "", f"Failed to {args[0]} unit: Unit file {name} does not exist.\n"
            self.states[name] = "enabled" if args[0] == "enable" else "disabled"
            return 0, "", ""
        if args[0] == "is-enabled":
            name = args[-1]
            if name not in self.states:
                return 1, "", f"Failed to get unit file state for {name}: No such file or directory\n"
            return (0 if self.states[name] == "enabled" else 1), self.states[name] + "\n", ""
        return 1, "", f"unexpected systemctl call {args}"


def me() -> Dict[str, str]:
    return {"owner": str(os.getuid()), "group": str(os.getgid())}


def description(root: Path) -> Dict[str, Any]:
    """Our config directory under parents that do not exist yet, two files, a drop-in, a link, and the unit."""
    return {
        "files": [
            {"path": str(root / "etc" / "gpu-ops" / "mig"), "state": "directory", "mode": "0755", **me()},
            {"path": str(root / "etc" / "gpu-ops" / "mig" / "config.yaml"), "content": "version: v1\nmig-configs: {}\n", "mode": "0644", **me()},
            {"path": str(root / "etc" / "gpu-ops" / "mig" / "report.sh"), "content": "#!/bin/sh\nexit 0\n", "mode": "0755", **me()},
            {"path": str(root / "etc" / "gpu-ops" / "current"), "state": "link", "src": "mig/config.yaml", **me()},
            {"path": str(root / "dropins"), "state": "directory", "mode": "0755", **me()},
            {"path": str(root / "dropins" / "zz-gpu-ops.conf"), "content": "[Unit]\nBefore=kubelet.service\n", "mode": "0644",
             "daemon_reload": True, **me()},
        ],
        "units": [{"name": UNIT, "enabled": True}],
    }


def listing(root: Path) -> Dict[str, Tuple[str, Optional[str]]]:
    """Every path under root: its mode and its content (or link target)."""
    found: Dict[str, Tuple[str, Optional[str]]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            found[str(path)] = ("link", os.readlink(path))
        elif path.is_dir():
            found[str(path)] = (f"{st.st_mode & 0o7777:04o}", None)
        else:
            found[str(path)] = (f"{st.st_mode & 0o7777:04o}", path.read_text())
    return found


def files_run(run_module: RunModule, desc: Dict[str, Any], node: Systemd, check: bool = False, diff: bool = False) -> ModuleExit:
    args = {**desc, "_ansible_check_mode": check, "_ansible_diff": diff}
    return run_module(mig_node_files.main, args, node)


def drift_of(run_module: RunModule, desc: Dict[str, Any], node: Systemd) -> List[Dict[str, str]]:
    res = run_module(mig_node_state.main, {"gpus": False, "want": desc}, node)
    assert not res.failed, res.result
    return list(res.result["drift"])


@pytest.fixture(autouse=True)
def debian(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mig_node_state, "read_os_family", lambda: "Debian")


def test_read_check_and_converge_agree_and_a_second_run_changes_nothing(run_module: RunModule, tmp_path: Path) -> None:
    desc = description(tmp_path)
    node = Systemd({UNIT: "disabled"})
    drift = drift_of(run_module, desc, node)
    assert [(d["name"], d["why"]) for d in drift] == [(f["path"], "absent") for f in desc["files"]] + [
        (UNIT, "not enabled (unit file state: disabled)")]
    assert not list(tmp_path.iterdir()), "the read wrote something"

    check = files_run(run_module, desc, node, check=True)
    assert not check.failed, check.result
    assert check.result["changed"] is True
    assert not list(tmp_path.iterdir()), "check mode wrote something"
    assert not [c for c in node.calls if c[0] in ("enable", "daemon-reload")], "check mode ran systemctl enable or daemon-reload"
    assert check.result["daemon_reload"] is True  # predicted: the drop-in would change

    node.calls.clear()
    real = files_run(run_module, desc, node)
    assert not real.failed, real.result
    # the real run changed what the read reported and check mode predicted (bar the parents it created on the way)
    assert list(real.result["changes"]) == list(check.result["changes"]) == [d["name"] for d in drift]
    assert real.result["changes"][desc["files"][0]["path"]] == ["absent", f"created with parents {tmp_path / 'etc'}, {tmp_path / 'etc' / 'gpu-ops'}"]
    # daemon-reload after the files, before the enable
    assert [c[0] for c in node.calls if c[0] != "show"] == ["daemon-reload", "enable"]
    assert node.states[UNIT] == "enabled"
    assert listing(tmp_path) == {
        str(tmp_path / "dropins"): ("0755", None),
        str(tmp_path / "dropins" / "zz-gpu-ops.conf"): ("0644", "[Unit]\nBefore=kubelet.service\n"),
        str(tmp_path / "etc"): ("0755", None),
        str(tmp_path / "etc" / "gpu-ops"): ("0755", None),
        str(tmp_path / "etc" / "gpu-ops" / "current"): ("link", "mig/config.yaml"),
        str(tmp_path / "etc" / "gpu-ops" / "mig"): ("0755", None),
        str(tmp_path / "etc" / "gpu-ops" / "mig" / "config.yaml"): ("0644", "version: v1\nmig-configs: {}\n"),
        str(tmp_path / "etc" / "gpu-ops" / "mig" / "report.sh"): ("0755", "#!/bin/sh\nexit 0\n"),
    }

    assert drift_of(run_module, desc, node) == []
    node.calls.clear()
    again = files_run(run_module, desc, node)
    assert (again.result["changed"], again.result["changes"], again.result["daemon_reload"]) == (False, {}, False)
    assert [c[0] for c in node.calls] == ["show"]
    again_check = files_run(run_module, desc, node, check=True)
    assert again_check.result["changed"] is False


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (lambda p: p.write_text("version: v1\nmig-configs: {edited: []}\n"), "content differs"),
        (lambda p: p.chmod(0o600), "mode 0600 instead of 0644"),
        (lambda p: (p.unlink(), p.symlink_to("/etc/hostname")), "is a link, not a file"),
    ],
    ids=["content", "mode", "link-in-place"],
)
def test_each_difference_is_reported_and_repaired(run_module: RunModule, tmp_path: Path, spoil: Callable[[Path], Any], why: str) -> None:
    desc = description(tmp_path)
    node = Systemd({UNIT: "enabled"})
    assert not files_run(run_module, desc, node).failed
    config = tmp_path / "etc" / "gpu-ops" / "mig" / "config.yaml"
    spoil(config)
    assert drift_of(run_module, desc, node) == [{"name": str(config), "kind": "file", "why": why}]
    res = files_run(run_module, desc, node, diff=True)
    assert res.result["changes"] == {str(config): [why]}
    assert res.result["daemon_reload"] is False  # only the drop-in asks for it
    assert not config.is_symlink()
    assert config.read_text() == "version: v1\nmig-configs: {}\n"
    assert f"{config.stat().st_mode & 0o7777:04o}" == "0644"
    assert drift_of(run_module, desc, node) == []


def test_a_mode_change_keeps_the_file(run_module: RunModule, tmp_path: Path) -> None:
    desc = description(tmp_path)
    node = Systemd({UNIT: "enabled"})
    files_run(run_module, desc, node)
    report = tmp_path / "etc" / "gpu-ops" / "mig" / "report.sh"
    report.chmod(0o644)
    inode = report.stat().st_ino
    res = files_run(run_module, desc, node, diff=True)
    assert res.result["changes"] == {str(report): ["mode 0644 instead of 0755"]}
    assert report.stat().st_ino == inode, "a mode change rewrote the file"
    assert res.result["diff"] == [{
        "before_header": f"{report} (attributes)", "after_header": f"{report} (attributes)",
        "before": {"path": str(report), "state": "file", "mode": "0644", "owner": f"{os.getuid()}:{os.getgid()}"},
        "after": {"path": str(report), "state": "file", "mode": "0755", "owner": f"{os.getuid()}:{os.getgid()}"},
    }]


def test_diff_shows_the_content_before_and_after(run_module: RunModule, tmp_path: Path) -> None:
    desc = description(tmp_path)
    node = Systemd({UNIT: "enabled"})
    files_run(run_module, desc, node)
    dropin = tmp_path / "dropins" / "zz-gpu-ops.conf"
    dropin.write_text("[Unit]\nBefore=containerd.service\n")
    node.calls.clear()
    res = files_run(run_module, desc, node, check=True, diff=True)
    assert res.result["diff"] == [{"before_header": str(dropin), "after_header": str(dropin),
                                   "before": "[Unit]\nBefore=containerd.service\n", "after": "[Unit]\nBefore=kubelet.service\n"}]
    assert dropin.read_text() == "[Unit]\nBefore=containerd.service\n", "check mode wrote the file"
    assert not [c for c in node.calls if c[0] == "daemon-reload"]


def test_a_symlink_in_place_of_a_file_is_replaced_not_followed(run_module: RunModule, tmp_path: Path) -> None:
    desc = description(tmp_path)
    node = Systemd({UNIT: "enabled"})
    files_run(run_module, desc, node)
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("keep me\n")
    report = tmp_path / "etc" / "gpu-ops" / "mig" / "report.sh"
    report.unlink()
    report.symlink_to(elsewhere)
    files_run(run_module, desc, node)
    assert elsewhere.read_text() == "keep me\n"
    assert not report.is_symlink()
    assert report.read_text() == "#!/bin/sh\nexit 0\n"


def test_what_would_need_deleting_fails_naming_it_and_is_left_alone(run_module: RunModule, tmp_path: Path) -> None:
    desc = description(tmp_path)
    config = Path(desc["files"][1]["path"])
    config.mkdir(parents=True)
    (config / "inside").write_text("x")
    node = Systemd({UNIT: "enabled"})
    assert {"name": str(config), "kind": "file", "why": f"{config} is a directory, not a file: remove it by hand"} in drift_of(run_module, desc, node)
    for check in (True, False):
        res = files_run(run_module, desc, node, check=check)
        assert res.failed
        assert res.result["msg"] == f"Converging the node's files and units: {config} is a directory, not a file: remove it by hand"
        assert (config / "inside").read_text() == "x"


def test_without_systemd_as_pid1_the_unit_is_enabled_on_disk_and_systemd_not_reloaded(run_module: RunModule, tmp_path: Path) -> None:
    node = Systemd({UNIT: "disabled"}, booted=False)
    res = files_run(run_module, description(tmp_path), node)
    assert not res.failed, res.result
    assert (res.result["systemd_running"], res.result["daemon_reload"]) == (False, False)
    assert [c for c in node.calls if "enable" in c] == [["--root=/", "enable", "--", UNIT]]
    assert not [c for c in node.calls if "daemon-reload" in c]
    assert node.states[UNIT] == "enabled"


def test_a_unit_that_does_not_exist_is_predicted_in_check_mode_and_fails_for_real(run_module: RunModule, tmp_path: Path) -> None:
    desc = {"files": [], "units": [{"name": UNIT}]}
    node = Systemd({})
    assert drift_of(run_module, desc, node) == [{"name": UNIT, "kind": "unit", "why": "no such unit"}]
    check = files_run(run_module, desc, node, check=True)
    assert check.result["changes"] == {UNIT: ["no such unit"]}  # the package installed before it would bring it
    real = files_run(run_module, desc, node)
    assert real.failed
    assert real.result["msg"] == (f"Converging the node's files and units: systemctl enable {UNIT} exited 1: "
                                  f"Failed to enable unit: Unit file {UNIT} does not exist.")


def test_a_unit_to_disable(run_module: RunModule) -> None:
    node = Systemd({"nvidia-mig-manager.service": "enabled"})
    res = files_run(run_module, {"files": [], "units": [{"name": UNIT, "enabled": False}]}, node)
    assert res.result["changes"] == {UNIT: ["enabled"]}
    assert node.states[UNIT] == "disabled"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "/etc/x", "content": "", "mode": 420},
         "files[0] (/etc/x): mode must be a quoted octal string such as '0644', got 420 (an unquoted YAML number: quote it)"),
        ({"path": "/etc/x", "content": "", "mode": "u+rw"}, "files[0] (/etc/x): mode 'u+rw' is not an octal mode such as '0644'"),
        ({"path": "/etc/x", "mode": "0644"}, "files[0] (/etc/x): a file needs content and mode"),
        ({"path": "etc/x", "content": "", "mode": "0644"}, "files[0] (etc/x): path must be absolute and normalised"),
        ({"path": "/etc/x/", "state": "directory", "mode": "0755"}, "files[0] (/etc/x/): path must be absolute and normalised"),
        ({"path": "/etc/x", "state": "link"}, "files[0] (/etc/x): a link needs src (its target)"),
        ({"path": "/etc/x", "state": "directory", "mode": "0755", "content": "x"}, "a directory needs a mode and takes no content"),
        ({"path": "/etc/x", "content": "", "mode": "0644", "owner": "no-such-user-gpu-ops"}, "owner 'no-such-user-gpu-ops' is not a user on this node"),
        ({"path": "/etc/x", "content": "", "mode": "0644", "state": "fifo"}, "value of state must be one of: file, directory, link, got: fifo"),
    ],
)
def test_a_wrong_description_fails_before_anything_runs(run_module: RunModule, entry: Dict[str, Any], message: str) -> None:
    for main, args, prefix in (
        (mig_node_files.main, {"files": [entry]}, "Converging the node's files and units: "),
        (mig_node_state.main, {"gpus": False, "want": {"files": [entry]}}, "Reading the node's state: want: "),
    ):
        node = Systemd({})
        res = run_module(main, args, node)
        assert res.failed, f"accepted {entry}"
        assert message in res.result["msg"], res.result["msg"]
        assert res.result["msg"].startswith(prefix) or "value of state" in res.result["msg"]
        assert node.calls == [], "a command ran before the description was refused"


def test_the_same_path_twice_is_refused(run_module: RunModule) -> None:
    entry = {"path": "/etc/x", "content": "", "mode": "0644"}
    res = run_module(mig_node_files.main, {"files": [entry, dict(entry, content="y")]}, Systemd({}))
    assert res.failed
    assert "files[1] (/etc/x): the same path as files[0]; describe each path once" in res.result["msg"]


def test_the_read_asks_systemd_once_for_its_units_and_the_wanted_ones(run_module: RunModule, tmp_path: Path) -> None:
    node = Systemd({UNIT: "enabled", "dcgm.service": "enabled"})
    res = run_module(mig_node_state.main, {"gpus": False, "units": ["dcgm.service"], "want": {"units": [{"name": UNIT}]}}, node)
    assert not res.failed, res.result
    assert node.calls == [["show", "--property=Id,LoadState,UnitFileState,ActiveState", "--", "dcgm.service", UNIT]]
    assert set(res.result["units"]) == {"dcgm.service", UNIT}
    assert res.result["drift"] == []


def test_content_is_compared_as_the_copy_module_does(tmp_path: Path) -> None:
    """The SHA-1 of the UTF-8 bytes, as ansible.builtin.copy and template compute it for content on the controller
    (ansible.utils.hashing.checksum_s) and the node for the file (hashlib over its bytes), non-ASCII text included."""
    text = "# café: 1g.10gb\n"
    path = tmp_path / "f"
    path.write_bytes(text.encode("utf-8"))
    assert _node_files.sha1(text) == checksum_s(text) == hashlib.sha1(path.read_bytes()).hexdigest()  # nosec B324


def test_check_mode_diff_of_a_fresh_node(run_module: RunModule, tmp_path: Path) -> None:
    """A directory or link shows its attributes (as the file module does), a new file its content (as copy does), a
    unit its unit file state."""
    desc = description(tmp_path)
    res = files_run(run_module, desc, Systemd({UNIT: "disabled"}), check=True, diff=True)
    shown = [(d["before_header"], d["before"], d["after"]) for d in res.result["diff"]]
    owner = f"{os.getuid()}:{os.getgid()}"
    mig = str(tmp_path / "etc" / "gpu-ops" / "mig")
    assert shown[0] == (f"{mig} (attributes)", {"path": mig, "state": "absent"}, {"path": mig, "state": "directory", "mode": "0755", "owner": owner})
    assert shown[1] == (f"{mig}/config.yaml", "", "version: v1\nmig-configs: {}\n")
    assert shown[2] == (f"{mig}/report.sh", "", "#!/bin/sh\nexit 0\n")
    link = str(tmp_path / "etc" / "gpu-ops" / "current")
    assert shown[3] == (f"{link} (attributes)", {"path": link, "state": "absent"}, {"path": link, "state": "link", "owner": owner, "src": "mig/config.yaml"})
    assert shown[-1] == (f"unit {UNIT}", {"unit": UNIT, "unit_file_state": "disabled"}, {"unit": UNIT, "unit_file_state": "enabled"})
    assert len(shown) == 7
