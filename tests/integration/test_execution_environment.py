# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""execution-environment.yml: `ansible-builder create` writes the build context offline, and the context holds
what the image needs (this collection's tarball, pinned collections and Python packages, helm checked by sha256).

Building the image itself needs a container registry and the network (base image, packages, Galaxy, helm): it
does not run here.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VENV_COLLECTIONS = Path(yaml.__file__).resolve().parents[1] / "ansible_collections"
STAGED_PACKAGE = "nvidia-mig-manager_0.13.0-1_amd64.deb"
PACKAGES_DIR = "/opt/gpu-ops/packages"

pytestmark = pytest.mark.slow


def _run(argv: List[str], cwd: Path, env: Dict[str, str], offline: bool = False) -> subprocess.CompletedProcess[str]:
    if offline:
        # no network at all: a new, empty network namespace (root only; CI runs as root)
        argv = ["unshare", "--net", "--", *argv]
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """The build context, made from a copy of the definition (the checkout stays clean)."""
    work = tmp_path_factory.mktemp("ee")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", HOME=str(work))
    shutil.copy(ROOT / "execution-environment.yml", work)
    shutil.copytree(ROOT / "ee", work / "ee")
    # a package staged for the image (a stand-in: the context build copies it, nothing reads it)
    (work / "build" / "ee" / "packages").mkdir(parents=True)
    (work / "build" / "ee" / "packages" / STAGED_PACKAGE).write_bytes(b"stand-in nvidia-mig-manager package\n")
    _run([str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(work / "build" / "ee"), str(ROOT)], work, env)
    offline = os.geteuid() == 0 and shutil.which("unshare") is not None
    proc = _run([str(BIN / "ansible-builder"), "create", "-f", "execution-environment.yml", "-c", "context", "-v", "3"], work, env, offline=offline)
    ctx = work / "context"
    return {"dir": ctx, "containerfile": (ctx / "Containerfile").read_text(), "offline": offline, "log": proc.stdout + proc.stderr, "env": env,
            "definition": yaml.safe_load((ROOT / "execution-environment.yml").read_text())}


def test_create_ran_without_network(context: Dict[str, Any]) -> None:
    if not context["offline"]:
        pytest.skip("not root: ansible-builder create ran with the network available")
    assert "Complete! The build context can be found at" in context["log"]
    assert (context["dir"] / "Containerfile").is_file()


def test_definition_is_version_3_with_a_fixed_base_image(context: Dict[str, Any]) -> None:
    definition = context["definition"]
    assert definition["version"] == 3
    base = definition["images"]["base_image"]["name"]
    assert not re.search(r"[{}$]", base), "a fixed name, no variable"
    assert not base.endswith(":latest")
    assert f'ARG EE_BASE_IMAGE="{base}"' in context["containerfile"]
    assert "FROM $EE_BASE_IMAGE AS base" in context["containerfile"]


def test_the_collection_tarball_is_in_the_context_and_installs_offline(context: Dict[str, Any], tmp_path: Path) -> None:
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    tarball = context["dir"] / "_build" / "collections" / f"gpu_ops-mig_serving-{version}.tar.gz"
    assert tarball.is_file(), sorted(p.name for p in (context["dir"] / "_build").rglob("*"))
    with tarfile.open(tarball) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
        names = set(tar.getnames())
    assert manifest["collection_info"]["version"] == version
    assert {"plugins/modules/mig_verify.py", "roles/k8s_objects/tasks/main.yml"} <= names
    # the galaxy stage installs it by this relative path from /build, where _build is copied
    requirements = yaml.safe_load((context["dir"] / "_build" / "requirements.yml").read_text())["collections"]
    ours = [r for r in requirements if r.get("type") == "file"]
    assert ours == [{"name": f"collections/{tarball.name}", "type": "file"}]
    assert "COPY _build /build\nWORKDIR /build" in context["containerfile"]
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in context["containerfile"]
    _run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "--no-deps", "-p", str(tmp_path), str(tarball)], tmp_path,
         context["env"], offline=context["offline"])
    installed = tmp_path / "ansible_collections" / "gpu_ops" / "mig_serving" / "MANIFEST.json"
    assert json.loads(installed.read_text())["collection_info"]["version"] == version


def test_collections_are_pinned_to_the_tested_versions(context: Dict[str, Any]) -> None:
    requirements = yaml.safe_load((context["dir"] / "_build" / "requirements.yml").read_text())["collections"]
    pinned = {r["name"]: r["version"] for r in requirements if r.get("type") != "file"}
    assert set(pinned) == {"kubernetes.core", "community.general", "ansible.posix"}
    depends = yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"]
    assert set(depends) <= set(pinned), "every dependency of the collection is pinned"
    for name, version in pinned.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name}: {version} is not an exact version"
        namespace, coll = name.split(".")
        tested = json.loads((VENV_COLLECTIONS / namespace / coll / "MANIFEST.json").read_text())["collection_info"]["version"]
        assert version == tested, f"{name}: EE pins {version}, tests run {tested}"
        low, high = re.fullmatch(r">=([\d.]+),<([\d.]+)", depends[name]).groups()  # type: ignore[union-attr]
        as_tuple = tuple(int(x) for x in version.split("."))
        assert tuple(int(x) for x in low.split(".")) <= as_tuple < tuple(int(x) for x in high.split(".")), f"{name} {version} outside {depends[name]}"


def test_python_packages_and_ansible_are_pinned(context: Dict[str, Any]) -> None:
    lines = [ln.strip() for ln in (context["dir"] / "_build" / "requirements.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines, "no Python requirements"
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", ln) for ln in lines), lines
    runtime = {ln.split("==")[0].lower(): ln for ln in (ROOT / "requirements" / "runtime.txt").read_text().splitlines() if "==" in ln}
    for line in lines:
        assert runtime.get(line.split("==")[0].lower()) == line, f"{line}: not the version the tests run (requirements/runtime.txt)"
    assert not any(ln.lower().startswith("nvidia-ml-py") for ln in lines), "NVML is read on the GPU nodes, not in the EE"
    assert f'ARG ANSIBLE_INSTALL_REFS="{runtime["ansible-core"]} ansible-runner==' in context["containerfile"]
    # kubectl / the OpenShift client from kubernetes.core's bindep are left out
    assert (context["dir"] / "_build" / "exclude-bindep.txt").read_text().split() == ["kubernetes-client", "openshift-clients"]


def helm_step(containerfile: str) -> str:
    steps = [ln for ln in containerfile.splitlines() if ln.startswith("RUN ") and "helm" in ln]
    assert len(steps) == 1, steps
    return steps[0]


def test_helm_is_pinned_and_checked_before_it_is_unpacked(context: Dict[str, Any]) -> None:
    step = helm_step(context["containerfile"])
    assert "| bash" not in context["containerfile"]
    assert not re.search(r"\|\s*sh\b", context["containerfile"])
    url = re.search(r"https://get\.helm\.sh/helm-v(\d+\.\d+\.\d+)-linux-amd64\.tar\.gz", step)
    assert url, step
    assert re.search(r'echo "[0-9a-f]{64}  /tmp/helm-install/helm\.tar\.gz" \| sha256sum -c -;', step)
    assert step.startswith("RUN set -eu;")
    order = [step.index(s) for s in ("curl -fsSL", "sha256sum -c", "tar -xzf", "install -m 0755", "helm version")]
    assert order == sorted(order), "download, verify, unpack, install, run: in that order"
    # in the final image, after the packages (tar, gzip) are installed from bindep
    assert context["containerfile"].index("install-from-bindep &&") < context["containerfile"].index(step)
    bindep = (context["dir"] / "_build" / "bindep.txt").read_text()
    assert "tar [platform:rpm]" in bindep
    assert "gzip [platform:rpm]" in bindep


def test_a_wrong_helm_download_stops_the_build(context: Dict[str, Any], tmp_path: Path) -> None:
    """The step itself, run with stand-ins for curl/tar/install that record calls: a tampered download fails sha256sum."""
    step = helm_step(context["containerfile"])[len("RUN "):].replace("/tmp/helm-install", str(tmp_path / "helm-install"))
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "calls"
    (fake / "curl").write_text('#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\necho "not helm" > "$2"\n')
    for tool in ("tar", "install", "helm"):
        (fake / tool).write_text(f'#!/bin/sh\necho {tool} >> "{calls}"\n')
    for path in fake.iterdir():
        path.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:/usr/bin:/bin")
    proc = subprocess.run(["sh", "-c", step], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "FAILED" in proc.stdout + proc.stderr
    assert not calls.exists(), f"ran after a failed checksum: {calls.read_text()}"


def package_step(containerfile: str) -> str:
    steps = [ln for ln in containerfile.splitlines() if ln.startswith("RUN ") and PACKAGES_DIR in ln]
    assert len(steps) == 1, steps
    return steps[0]


def test_packages_for_the_nodes_land_at_a_fixed_path(context: Dict[str, Any]) -> None:
    """mig_layout_package_file can name /opt/gpu-ops/packages/<file> in AWX, where the controller is the EE."""
    packages = context["dir"] / "_build" / "packages"
    assert sorted(p.name for p in packages.iterdir()) == ["SHA256SUMS", STAGED_PACKAGE]
    containerfile = context["containerfile"]
    copy = f"COPY _build/packages/ {PACKAGES_DIR}/"
    assert copy in containerfile.splitlines()
    # in the final image: after the final stage's bindep install, and checked right after the copy
    assert containerfile.index("install-from-bindep &&") < containerfile.index(copy) < containerfile.index(package_step(containerfile))
    # the path the inventory and the docs name
    for doc in ("inventories/dgx/group_vars/gpu_nodes.yml", "docs/awx.md", "ee/packages/README.md"):
        assert f"{PACKAGES_DIR}/nvidia-mig-manager_0.13.0-1_amd64.deb" in (ROOT / doc).read_text(), doc


def test_an_unlisted_or_altered_package_stops_the_build(context: Dict[str, Any], tmp_path: Path) -> None:
    """The step itself, run on a stand-in of the image's directory: each carried file must match its SHA256SUMS line."""
    step = package_step(context["containerfile"])[len("RUN "):].replace(PACKAGES_DIR, str(tmp_path / "packages"))
    staged = tmp_path / "packages"

    def build(files: Dict[str, bytes], sums: str) -> subprocess.CompletedProcess[str]:
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir()
        (staged / "SHA256SUMS").write_text(sums)
        for name, data in files.items():
            (staged / name).write_bytes(data)
        return subprocess.run(["sh", "-c", step], capture_output=True, text=True, timeout=60, check=False)

    deb = b"stand-in nvidia-mig-manager package\n"
    good = f"{hashlib.sha256(deb).hexdigest()}  {STAGED_PACKAGE}\n"
    assert build({}, (ROOT / "ee" / "packages" / "SHA256SUMS").read_text()).returncode == 0, "no package carried: the shipped list is enough"
    proc = build({STAGED_PACKAGE: deb}, good)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{STAGED_PACKAGE}: OK" in proc.stdout
    proc = build({STAGED_PACKAGE: deb}, "")
    assert proc.returncode != 0
    assert f"{STAGED_PACKAGE}: no sha256 line in ee/packages/SHA256SUMS" in proc.stderr
    proc = build({STAGED_PACKAGE: deb + b"tampered"}, good)
    assert proc.returncode != 0
    assert "FAILED" in proc.stdout + proc.stderr
    # a line for a similar name does not stand for this file
    proc = build({STAGED_PACKAGE: deb, "nvidia-mig-manager_0.13.0-1_amd64Xdeb": deb}, good.replace(STAGED_PACKAGE, "nvidia-mig-manager_0.13.0-1_amd64Xdeb"))
    assert proc.returncode != 0
