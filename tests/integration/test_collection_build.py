# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection builds, installs offline, and ansible-doc lists and documents its plugins."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

EXPECTED_MODULES = {"gpu_ops.mig_serving.mig_info", "gpu_ops.mig_serving.mig_verify", "gpu_ops.mig_serving.mig_node_state",
                    "gpu_ops.mig_serving.serving_verify", "gpu_ops.mig_serving.k8s_render", "gpu_ops.mig_serving.mig_node_files",
                    "gpu_ops.mig_serving.preflight", "gpu_ops.mig_serving.loadtest_sample", "gpu_ops.mig_serving.loadtest_report"}
EXPECTED_FILTERS = {
    "gpu_ops.mig_serving.mig_plan",
    "gpu_ops.mig_serving.mig_compare",
    "gpu_ops.mig_serving.mig_resources",
    "gpu_ops.mig_serving.mig_cluster_expected",
    "gpu_ops.mig_serving.mig_cluster_compare",
    "gpu_ops.mig_serving.input_problems",
    "gpu_ops.mig_serving.mig_fleet",
    "gpu_ops.mig_serving.nfd_running",
    "gpu_ops.mig_serving.nfd_decision",
    "gpu_ops.mig_serving.k8s_namespace",
    "gpu_ops.mig_serving.k8s_restricted_security_context",
    "gpu_ops.mig_serving.serving_pools",
    "gpu_ops.mig_serving.nginx_upstream_zone_size",
}
EXPECTED_LOOKUPS = {"gpu_ops.mig_serving.mig_config"}


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_build_install_offline_and_ansible_doc(tmp_path: Path) -> None:
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", HOME=str(tmp_path))
    _run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path / "dist"), str(ROOT)], env, ROOT)
    tarball = tmp_path / "dist" / f"gpu_ops-mig_serving-{version}.tar.gz"
    assert tarball.is_file()
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    # what a user needs is in, what is local noise is not
    assert {"plugins/modules/mig_info.py", "plugins/module_utils/_mig_plan.py", "MANIFEST.json"} <= names
    assert not [n for n in names if n.startswith((".venv", "build/", ".git/"))]

    dest = tmp_path / "collections"
    # --no-deps: dependencies come from the `ansible` package here; --offline: Galaxy is never contacted
    _run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "--no-deps", "-p", str(dest), str(tarball)],
        env,
        tmp_path,
    )
    installed = dest / "ansible_collections" / "gpu_ops" / "mig_serving"
    assert json.loads((installed / "MANIFEST.json").read_text())["collection_info"]["version"] == version

    env["ANSIBLE_COLLECTIONS_PATH"] = str(dest)
    modules = json.loads(_run([str(BIN / "ansible-doc"), "-l", "-j", "gpu_ops.mig_serving"], env, tmp_path))
    assert set(modules) == EXPECTED_MODULES
    filters = json.loads(_run([str(BIN / "ansible-doc"), "-t", "filter", "-l", "-j", "gpu_ops.mig_serving"], env, tmp_path))
    assert set(filters) == EXPECTED_FILTERS
    lookups = json.loads(_run([str(BIN / "ansible-doc"), "-t", "lookup", "-l", "-j", "gpu_ops.mig_serving"], env, tmp_path))
    assert set(lookups) == EXPECTED_LOOKUPS
    doc = json.loads(_run([str(BIN / "ansible-doc"), "-j", "gpu_ops.mig_serving.mig_verify"], env, tmp_path))
    assert "fail_on_mismatch" in doc["gpu_ops.mig_serving.mig_verify"]["doc"]["options"]
