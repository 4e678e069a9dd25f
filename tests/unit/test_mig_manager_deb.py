# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The simulated nvidia-mig-manager package (tests/gpu_sim/packaging): what build-deb.sh builds, and what its
service.sh does at boot, run outside any container (the package extracted into tmp_path, the GPU simulator
and a recording `systemctl` on PATH). The package installed in a systemd container is tested in
tests/integration/test_testbed.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SIM = REPO / "tests" / "gpu_sim"
BUILD = SIM / "packaging" / "build-deb.sh"
LAYOUTS = REPO / "inventories" / "layouts" / "dgx.yaml"
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
TIMEOUT = 120

if shutil.which("dpkg-deb") is None:
    pytest.skip("dpkg-deb is missing (Debian's dpkg)", allow_module_level=True)

FILES = {
    "./usr/bin/nvidia-mig-parted",
    "./lib/systemd/system/nvidia-mig-manager.service",
    "./etc/systemd/system/nvidia-mig-manager.service.d/override.conf",
    "./etc/profile.d/nvidia-mig-parted.sh",
    "./etc/nvidia-mig-manager/service.sh",
    "./etc/nvidia-mig-manager/utils.sh",
    "./etc/nvidia-mig-manager/hooks.sh",
    "./etc/nvidia-mig-manager/hooks-default.yaml",
    "./etc/nvidia-mig-manager/hooks-minimal.yaml",
    "./etc/nvidia-mig-manager/config-default.yaml",
    "./usr/share/doc/nvidia-mig-manager/README.md",
}


def run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def build(version: str, outdir: Path, tmpdir: Path | None = None) -> Path:
    env = dict(os.environ)
    env.pop("SOURCE_DATE_EPOCH", None)
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    done = run(["bash", str(BUILD), version, str(outdir)], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    deb = outdir / f"nvidia-mig-manager_{version}-1_amd64.deb"
    assert done.stdout.strip() == str(deb)
    return deb


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("0.13.0", tmp_path_factory.mktemp("debs"))


def field(deb: Path, name: str) -> str:
    done = run(["dpkg-deb", "-f", str(deb), name])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_build_is_deterministic(deb: Path, tmp_path: Path) -> None:
    again = build("0.13.0", tmp_path / "again", tmp_path / "other-tmp")
    assert hashlib.sha256(again.read_bytes()).hexdigest() == hashlib.sha256(deb.read_bytes()).hexdigest()
    older = build("0.12.1", tmp_path / "again")
    assert older.read_bytes() != deb.read_bytes()
    assert field(older, "Version") == "0.12.1-1"


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    for argv in ([], ["0.13.0"], ["latest", str(tmp_path)], ["0.13.0; rm", str(tmp_path)]):
        done = run(["bash", str(BUILD), *argv])
        assert done.returncode == 2
        assert "usage:" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_control_fields(deb: Path) -> None:
    assert field(deb, "Package") == "nvidia-mig-manager"
    assert field(deb, "Version") == "0.13.0-1"
    assert field(deb, "Architecture") == "amd64"
    assert field(deb, "Depends") == "python3 (>= 3.11)"  # Debian 12 minbase + python3 has it


def test_contents_owners_modes_and_conffiles(deb: Path, tmp_path: Path) -> None:
    listing = run(["dpkg-deb", "-c", str(deb)]).stdout.splitlines()
    entries = {line.split()[-1]: line.split() for line in listing}
    files = {path for path, cols in entries.items() if cols[0].startswith("-")}
    assert files == FILES
    assert {cols[1] for cols in entries.values()} == {"root/root"}
    assert {cols[3] + " " + cols[4] for cols in entries.values()} == {"2024-01-01 00:00"}  # SOURCE_DATE_EPOCH
    executables = {path for path, cols in entries.items() if cols[0] == "-rwxr-xr-x"}
    assert executables == {"./usr/bin/nvidia-mig-parted", "./etc/nvidia-mig-manager/service.sh"}
    assert "./var/lib/nvidia-mig-manager/" in entries
    control = tmp_path / "control"
    assert run(["dpkg-deb", "-e", str(deb), str(control)]).returncode == 0
    assert (control / "conffiles").read_text() == "/etc/systemd/system/nvidia-mig-manager.service.d/override.conf\n"
    for script in ("postinst", "postrm"):
        assert os.access(control / script, os.X_OK)
        assert run(["sh", "-n", str(control / script)]).returncode == 0
    assert not (control / "prerm").exists()  # removing the package neither stops nor disables the unit
    md5 = (control / "md5sums").read_text().splitlines()
    assert sorted(line.split()[1] for line in md5) == sorted(path[2:] for path in FILES)


def test_unit_override_and_wrapper(deb: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run(["dpkg-deb", "-x", str(deb), str(root)]).returncode == 0
    unit = (root / "lib/systemd/system/nvidia-mig-manager.service").read_text().splitlines()
    for line in (
        "DefaultDependencies=no",
        "After=nvidia-persistenced.service nvidia-fabricmanager.service",
        "Type=oneshot",
        "ExecStart=/bin/bash /etc/nvidia-mig-manager/service.sh",
        "WantedBy=multi-user.target",
    ):
        assert line in unit
    override = (root / "etc/systemd/system/nvidia-mig-manager.service.d/override.conf").read_text().splitlines()
    assert [line for line in override if not line.startswith("#")] == ["[Service]", 'Environment="MIG_PARTED_SELECTED_CONFIG=all-disabled"']
    # Without the simulated driver (/usr/lib/gpu-sim) the wrapper still reports its version, and fails otherwise.
    wrapper = str(root / "usr/bin/nvidia-mig-parted")
    if not Path("/usr/lib/gpu-sim").exists():
        assert run([PYTHON, wrapper, "--version"]).stdout == "nvidia-mig-parted version 0.13.0 (simulated)\n"
        failed = run([PYTHON, wrapper, "export"])
        assert failed.returncode == 1
        assert "Driver Not Loaded" in failed.stderr
    for name in ("service.sh", "utils.sh", "hooks.sh"):
        assert run(["bash", "-n", str(root / "etc/nvidia-mig-manager" / name)]).returncode == 0


class Node:
    """The extracted package with the simulator and a recording systemctl on PATH: a node without systemd."""

    def __init__(self, tmp_path: Path, deb: Path) -> None:
        self.root = tmp_path / "root"
        assert run(["dpkg-deb", "-x", str(deb), str(self.root)]).returncode == 0
        self.etc = self.root / "etc" / "nvidia-mig-manager"
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.calls = tmp_path / "systemctl.calls"
        for tool in ("nvidia-smi", "nvidia-mig-parted", "gpu-sim"):
            self._script(tool, f'exec {PYTHON} {SIM / "bin" / tool} "$@"')
        self._script("systemctl", f'echo "$*" >> {self.calls}')
        self.env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "GPU_SIM_STATE": str(tmp_path / "gpu-sim" / "state.json"),
            "MIG_MANAGER_STATE_DIR": str(tmp_path / "var"),
            "MIG_MANAGER_OVERRIDE": str(tmp_path / "override.conf"),
            "LC_ALL": "C",
        }

    def _script(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
        path.chmod(0o755)

    def sim(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = run([str(self.bin / tool), *args], env=self.env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def boot(self, selected: str | None, config_file: str | None = None) -> subprocess.CompletedProcess[str]:
        """What a reboot does: gpu-sim boot, then the unit (gpu-sim-boot.service is ordered before it)."""
        self.sim("gpu-sim", "boot")
        return self.service(selected, config_file)

    def service(self, selected: str | None, config_file: str | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if selected is not None:
            env["MIG_PARTED_SELECTED_CONFIG"] = selected
        if config_file is not None:
            env["MIG_PARTED_CONFIG_FILE"] = config_file
        return run(["bash", str(self.etc / "service.sh")], env=env)

    def ops(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.sim("gpu-sim", "log").stdout.splitlines()]

    def systemctl(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def node(tmp_path: Path, deb: Path) -> Node:
    return Node(tmp_path, deb)


def test_service_applies_the_selected_layout_and_regenerates_config_yaml(node: Node) -> None:
    node.sim("gpu-sim", "init", "--model", "A100-SXM4-40GB", "--count", "8")
    (node.etc / "config.yaml").symlink_to("config-default.yaml")  # as the postinst leaves it
    done = node.boot("all-balanced", str(LAYOUTS))
    assert done.returncode == 0, done.stderr
    assert "1g.5gb: 2" in done.stdout  # the export at the end
    assert node.sim("nvidia-mig-parted", "assert", "-f", str(LAYOUTS), "-c", "all-balanced").returncode == 0
    config = node.etc / "config.yaml"
    assert not config.is_symlink()
    assert config.read_text().startswith("# Generated from the GPUs at every boot")
    assert "all-1g.5gb:" in config.read_text()
    # a second boot: the instances are gone after gpu-sim boot and re-created; the mode needs no change
    before = len(node.ops())
    config.write_text("edited\n")
    assert node.boot("all-balanced", str(LAYOUTS)).returncode == 0
    ops = [e["op"] for e in node.ops()[before:]]
    assert ops[0] == "boot"
    assert "mig-mode" not in ops
    assert "reset" not in ops
    assert ops.count("create-gi") == 32
    assert config.read_text().startswith("# Generated")  # overwritten, the edit is gone
    # without a config file of its own the service uses the generated config.yaml
    assert node.boot("all-1g.5gb").returncode == 0
    assert node.sim("nvidia-mig-parted", "assert", "-f", str(config), "-c", "all-1g.5gb").returncode == 0


def test_service_needs_a_selected_config(node: Node) -> None:
    node.sim("gpu-sim", "init", "--model", "H200", "--count", "1")
    done = node.boot(None)
    assert done.returncode == 1
    assert "MIG_PARTED_SELECTED_CONFIG is not set" in done.stderr


def test_service_fails_with_a_message_on_an_apply_failure(node: Node) -> None:
    node.sim("gpu-sim", "init", "--model", "H200", "--count", "2")
    node.sim("gpu-sim", "set-apply-failure", "on", "--message", "boom")
    done = node.boot("all-1g.18gb", str(LAYOUTS))
    assert done.returncode == 1
    assert "Error applying MIG mode" in done.stderr
    assert "boom" in done.stderr
    assert not {e["op"] for e in node.ops()} & {"mig-mode", "reset", "create-gi", "create-ci", "destroy-gi", "destroy-ci"}


def test_service_reboots_once_where_gpus_cannot_be_reset(node: Node) -> None:
    node.sim("gpu-sim", "init", "--model", "A100-SXM4-40GB", "--count", "2")
    node.sim("gpu-sim", "set-resettable", "all", "off")
    marker = Path(node.env["MIG_MANAGER_STATE_DIR"]) / "reboot_attempted"
    first = node.boot("all-1g.5gb", str(LAYOUTS))
    assert first.returncode == 0, first.stderr  # the (recorded) reboot was asked for
    assert node.systemctl() == ["reboot"]
    assert marker.exists()
    # Had the reboot not made the mode current, the next run would not reboot again: it fails.
    second = node.service("all-1g.5gb", str(LAYOUTS))
    assert second.returncode == 1
    assert "not rebooting again" in second.stderr
    assert node.systemctl() == ["reboot"]
    # After a real reboot the pending mode is current: the service applies the layout and clears the marker.
    third = node.boot("all-1g.5gb", str(LAYOUTS))
    assert third.returncode == 0, third.stderr
    assert not marker.exists()
    assert node.sim("nvidia-mig-parted", "assert", "-f", str(LAYOUTS), "-c", "all-1g.5gb").returncode == 0


def test_hooks_persist_the_selected_config(node: Node) -> None:
    node.sim("gpu-sim", "init", "--model", "H200", "--count", "1")
    override = Path(node.env["MIG_MANAGER_OVERRIDE"])
    override.write_text('[Service]\nEnvironment="MIG_PARTED_SELECTED_CONFIG=all-disabled"\nEnvironment="OTHER=lost"\n')
    # The packaged hooks file, its workdir pointed at the extracted package and, since mig-parted gives hooks no
    # inherited environment, envs that keep the hook off this machine's systemd (our override path and PATH).
    spec = yaml.safe_load((node.etc / "hooks-minimal.yaml").read_text())
    (hook,) = spec["hooks"]["apply-start"]
    assert hook["command"] == "/bin/bash"
    assert hook["workdir"] == "/etc/nvidia-mig-manager"
    hook["workdir"] = str(node.etc)
    hook["envs"] = {name: node.env[name] for name in ("PATH", "MIG_MANAGER_OVERRIDE", "MIG_MANAGER_STATE_DIR")}
    hooks = node.root / "hooks.yaml"
    hooks.write_text(yaml.safe_dump(spec), encoding="utf-8")
    done = run([str(node.bin / "nvidia-mig-parted"), "apply", "-f", str(LAYOUTS), "-c", "all-1g.18gb", "-k", str(hooks)], env=node.env)
    assert done.returncode == 0, done.stderr
    assert override.read_text() == '[Service]\nEnvironment="MIG_PARTED_SELECTED_CONFIG=all-1g.18gb"\n'  # rewritten whole
    if Path("/run/systemd/system").is_dir():
        assert node.systemctl() == ["daemon-reload"]
