# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests of tests/fake_helm: the installed kubernetes.core.helm module against it, in check and apply mode, and its
loud failure on anything it does not reproduce."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.fake_helm import FakeHelm
else:
    from fake_helm import FakeHelm

BIN = Path(sys.executable).parent
REPO = "https://charts.example.test/stable"
CHARTS = [{"repository": REPO, "name": "demo", "version": "1.2.3", "appVersion": "v9.0", "description": "demo chart"},
          {"repository": REPO, "name": "demo", "version": "1.2.4", "appVersion": "v9.1", "description": "demo chart"}]


def helm_task(tmp_path: Path, fake: FakeHelm, version: str, values: Dict[str, Any], check: bool) -> subprocess.CompletedProcess[str]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": []}))
    play = [{"name": "helm", "hosts": "localhost", "gather_facts": False, "tasks": [{"name": "Release", "kubernetes.core.helm": {
        "name": "demo", "release_namespace": "apps", "chart_ref": "demo", "chart_repo_url": REPO, "chart_version": version,
        "release_values": values, "wait": True, "wait_timeout": "60s", "atomic": True, "kubeconfig": str(kubeconfig)}}]}]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play))
    env = dict(os.environ, PATH=f"{fake.bin_dir}:{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", HOME=str(tmp_path), ANSIBLE_LOCALHOST_WARNING="0")
    argv: List[str] = [str(BIN / "ansible-playbook"), str(path), "-e", f"ansible_python_interpreter={sys.executable}"] + (["--check"] if check else [])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, check=False)


def test_the_helm_module_installs_detects_changes_and_checks_against_it(tmp_path: Path) -> None:
    fake = FakeHelm(tmp_path / "helm", CHARTS)
    values = {"replicas": 2, "image": {"tag": "v9.0"}}
    check = helm_task(tmp_path, fake, "1.2.3", values, check=True)
    assert check.returncode == 0, check.stdout[-3000:]
    assert "changed=1" in check.stdout
    assert fake.releases() == {}
    first = helm_task(tmp_path, fake, "1.2.3", values, check=False)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "changed=1" in first.stdout
    release = fake.releases()["apps/demo"]
    assert (release["chart"], release["app_version"], release["values"], release["revision"]) == ("demo-1.2.3", "v9.0", values, 1)
    again = helm_task(tmp_path, fake, "1.2.3", values, check=False)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "changed=0" in again.stdout, again.stdout[-3000:]
    newer = helm_task(tmp_path, fake, "1.2.4", values, check=True)
    assert newer.returncode == 0, newer.stdout[-3000:]
    assert "changed=1" in newer.stdout, newer.stdout[-3000:]
    assert fake.releases()["apps/demo"]["revision"] == 1
    calls = fake.calls()
    assert all(c["reproduced"] for c in calls)
    upgrades = [c for c in calls if "upgrade" in c["argv"]]
    assert len(upgrades) == 1
    assert "--atomic" in upgrades[0]["argv"]
    assert upgrades[0]["namespace"] == "apps"
    assert {" ".join(c["argv"][:2]) for c in calls} >= {"version", "list --output=yaml", "get values", "--version=1.2.3 --repo=" + REPO}


def test_anything_not_reproduced_fails_loudly(tmp_path: Path) -> None:
    fake = FakeHelm(tmp_path / "helm", CHARTS)
    for argv in (["install", "demo", "demo"], ["list", "--output=json"], ["upgrade", "-i", "--take-ownership", "demo", "demo"], ["repo", "add", "x", REPO]):
        proc = subprocess.run([str(fake.helm), *argv], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 97, (argv, proc.stdout, proc.stderr)
        assert "fake helm: NOT REPRODUCED" in proc.stderr
    assert [c["reproduced"] for c in fake.calls()] == [False] * 4
    missing = subprocess.run([str(fake.helm), "--version=9.9.9", f"--repo={REPO}", "show", "chart", "demo"], capture_output=True, text=True, timeout=60,
                             check=False)
    assert missing.returncode == 1
    assert missing.stderr == f'Error: chart "demo" version "9.9.9" not found in {REPO} repository\n'


def test_output_formats(tmp_path: Path) -> None:
    fake = FakeHelm(tmp_path / "helm", CHARTS)

    def run(*argv: str) -> str:
        env = dict(os.environ, HELM_NAMESPACE="apps")
        return subprocess.run([str(fake.helm), *argv], capture_output=True, text=True, timeout=60, check=True, env=env).stdout

    assert run("version").startswith('version.BuildInfo{Version:"v3.')
    assert run("list", "--output=yaml", "--filter", "demo", "--deployed") == "[]\n"
    fake.set_release("demo", "apps", "demo", "1.2.3", "v9.0", {})
    listed = yaml.safe_load(run("list", "--output=yaml", "--filter", "demo", "--deployed"))
    assert listed[0]["revision"] == "1"
    assert listed[0]["chart"] == "demo-1.2.3"
    assert listed[0]["status"] == "deployed"
    assert run("get", "values", "--output=yaml", "demo") == "null\n"  # helm 3 prints null when no values were given
    assert yaml.safe_load(run("--version=1.2.4", f"--repo={REPO}", "show", "chart", "demo"))["appVersion"] == "v9.1"
