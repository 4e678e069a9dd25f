# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The render directory belongs to the user (role k8s_objects, render mode).

A render removes only files an earlier render wrote (listed in ``<render_dir>/.gpu_ops-rendered``) and still
holding what it wrote; sensitive components are written 0600 in a 0700 directory and removed when no longer
rendered; a relative render directory is taken from the directory ansible-playbook was started in; bad input
(``tests/data/bad_inputs/render.yaml``) is refused before anything is written or removed.

Most tests include the role directly with a few ConfigMaps (a run takes about 3 s); one runs
``playbooks/render.yml`` twice from a temporary working directory (Plus with its own namespace, then open source
with another monitor kind)."""
from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env, offline_prefix
    from tests.vault_vars import VAULT_ARGS
else:
    from ansible_run import ansible_env, offline_prefix
    from vault_vars import VAULT_ARGS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CASES: List[Dict[str, Any]] = yaml.safe_load((ROOT / "tests/data/bad_inputs/render.yaml").read_text())
RECORD = ".gpu_ops-rendered"

pytestmark = pytest.mark.slow


def configmap(name: str, **data: str) -> Dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def release(name: str) -> Dict[str, Any]:
    return {"release": name, "namespace": "demo", "repository": "https://charts.example.internal", "chart": name,
            "version": "1.2.3", "values": {"replicas": 1}}


def _env(home: Path) -> Dict[str, str]:
    return ansible_env(home, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))


def include_role(tmp_path: Path, render_dir: str, *extra: str, **role_vars: Any) -> subprocess.CompletedProcess[str]:
    """Include k8s_objects in render mode from a playbook in tmp_path, started in tmp_path/work."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    role_vars = {"k8s_objects_mode": "render", "k8s_objects_component": "demo",
                 "k8s_objects_manifests": [configmap("x")], "k8s_objects_helm_releases": [],
                 "k8s_objects_render_dir": render_dir, **role_vars}
    play = [{"name": "Render", "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
        {"name": "Render", "ansible.builtin.include_role": {"name": "gpu_ops.mig_serving.k8s_objects"}, "vars": role_vars}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    argv = [str(BIN / "ansible-playbook"), str(tmp_path / "play.yml"), "-e", f"ansible_python_interpreter={sys.executable}", *extra]
    return subprocess.run(argv, cwd=work, env=_env(tmp_path), capture_output=True, text=True, timeout=180, check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    return proc.stdout


def snapshot(top: Path) -> Dict[str, Optional[str]]:
    """Every path under top: its content for a file, None for a directory."""
    return {str(p.relative_to(top)): (p.read_text() if p.is_file() else None) for p in sorted(top.rglob("*"))}


def record(out: Path) -> Dict[str, Any]:
    data = json.loads((out / RECORD).read_text())
    assert isinstance(data, dict)
    return data


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- bad input: refused before anything is written or removed ---------------------------------------------------


def test_the_table_is_well_formed() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), "ids are unique"
    assert len(ids) >= 8
    for case in CASES:
        assert case["id"].startswith("render-"), case["id"]
        assert {"area", "input", "message"} <= set(case), case["id"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_render_input(tmp_path: Path, case: Dict[str, Any]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for rel, content in (case.get("setup") or {}).items():
        path = work / rel
        if rel.endswith("/"):
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    before = snapshot(work)
    proc = include_role(tmp_path, case.get("render_dir", "out"), **(case.get("vars") or {}))
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert case["message"] in " ".join(log.split()), log[-3000:]
    assert "Traceback" not in log
    assert snapshot(work) == before, "nothing may be written or removed on bad input"


# --- ownership ------------------------------------------------------------------------------------------------------


def test_a_render_removes_only_what_an_earlier_render_wrote(tmp_path: Path) -> None:
    out = tmp_path / "work" / "out"
    ok(include_role(tmp_path, "out", k8s_objects_manifests=[configmap("x"), configmap("y")],
                    k8s_objects_helm_releases=[release("chart-a")]))
    assert sorted(p.name for p in (out / "demo").iterdir()) == ["01-configmap-x.yaml", "02-configmap-y.yaml", "chart-a.values.yaml"]
    written = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in (out / "demo").iterdir()}  # as recorded
    assert record(out)["version"] == 1
    assert record(out)["components"] == {"demo": written}
    # the user's own files beside the manifests, and an index entry that must go with its release
    (out / "demo" / "sealedsecret-registry.yaml").write_text("kind: SealedSecret\n")
    (out / "mine.yaml").write_text("kind: Kustomization\n")
    assert [r["release"] for r in yaml.safe_load((out / "helm-releases.yaml").read_text())["releases"]] == ["chart-a"]

    # another variant: y and the release are no longer produced -> removed; the user's files stay
    ok(include_role(tmp_path, "out", k8s_objects_manifests=[configmap("x")]))
    assert sorted(p.name for p in (out / "demo").iterdir()) == ["01-configmap-x.yaml", "sealedsecret-registry.yaml"]
    assert (out / "demo" / "sealedsecret-registry.yaml").read_text() == "kind: SealedSecret\n"
    assert (out / "mine.yaml").read_text() == "kind: Kustomization\n"
    assert yaml.safe_load((out / "helm-releases.yaml").read_text())["releases"] == []
    assert list(record(out)["components"]["demo"]) == ["01-configmap-x.yaml"]

    # a file the render wrote and the user changed since is kept when no longer produced, and is theirs from then on
    (out / "demo" / "01-configmap-x.yaml").write_text("# reviewed by me\n")
    proc = include_role(tmp_path, "out", k8s_objects_manifests=[configmap("z")])
    ok(proc)
    # a warning, on stderr: the user must see it
    assert "it changed since (it is yours now" in " ".join(proc.stderr.split())
    assert sorted(p.name for p in (out / "demo").iterdir()) == ["01-configmap-x.yaml", "01-configmap-z.yaml", "sealedsecret-registry.yaml"]
    assert (out / "demo" / "01-configmap-x.yaml").read_text() == "# reviewed by me\n"
    assert list(record(out)["components"]["demo"]) == ["01-configmap-z.yaml"]

    # the same input again changes nothing
    log = ok(include_role(tmp_path, "out", k8s_objects_manifests=[configmap("z")]))
    assert "changed=0" in log, log[-3000:]

    # the component renders nothing any more: its files go, the directory stays for the user's files
    ok(include_role(tmp_path, "out", k8s_objects_manifests=[]))
    assert sorted(p.name for p in (out / "demo").iterdir()) == ["01-configmap-x.yaml", "sealedsecret-registry.yaml"]
    assert "demo" not in record(out)["components"]


def test_sensitive_component_is_private_never_logged_and_removed_when_no_longer_rendered(tmp_path: Path) -> None:
    out = tmp_path / "work" / "out"
    # what an earlier version left: 0644 in a 0755 directory
    (out / "secrets").mkdir(parents=True, mode=0o755)
    (out / "secrets").chmod(0o755)
    (out / "secrets" / "01-configmap-s.yaml").write_text("old\n")
    (out / "secrets" / "01-configmap-s.yaml").chmod(0o644)
    log = ok(include_role(tmp_path, "out", "-v", k8s_objects_component="secrets", k8s_objects_sensitive=True,
                          k8s_objects_manifests=[configmap("s", token="TOKEN-NEVER-LOGGED"), configmap("t", token="TOKEN-2")]))
    assert "TOKEN-NEVER-LOGGED" not in log
    assert mode(out / "secrets") == 0o700
    files = sorted((out / "secrets").iterdir())
    assert [p.name for p in files] == ["01-configmap-s.yaml", "02-configmap-t.yaml"]
    assert all(mode(p) == 0o600 for p in files), [oct(mode(p)) for p in files]
    assert "TOKEN-NEVER-LOGGED" in (out / "secrets" / "01-configmap-s.yaml").read_text()
    # no digest of a secret is kept
    assert record(out)["components"]["secrets"] == {"01-configmap-s.yaml": None, "02-configmap-t.yaml": None}
    assert "TOKEN" not in (out / RECORD).read_text()

    # no longer rendered (NGINX Plus switched back to open source): files, directory and record entry go
    ok(include_role(tmp_path, "out", k8s_objects_component="secrets", k8s_objects_sensitive=True, k8s_objects_manifests=[]))
    assert not (out / "secrets").exists()
    assert "secrets" not in record(out)["components"]


def test_relative_render_dir_is_taken_from_the_working_directory(tmp_path: Path) -> None:
    ok(include_role(tmp_path, "rel/out"))
    assert (tmp_path / "work" / "rel" / "out" / "demo" / "01-configmap-x.yaml").is_file()
    assert (tmp_path / "work" / "rel" / "out" / "helm-releases.yaml").is_file()
    # the playbook's directory is tmp_path: nothing there
    assert not (tmp_path / "rel").exists()


def test_check_mode_writes_nothing(tmp_path: Path) -> None:
    log = ok(include_role(tmp_path, "out", "--check"))
    assert "changed=" in log
    assert snapshot(tmp_path / "work") == {}


# --- playbooks/render.yml for real: Plus with its namespace, then open source with another monitor kind ------------

LICENCE = "eyJhbGciOiJFUzI1NiJ9.RENDER-DIR-LICENCE.sig"
PLUS = ["-e", "nginx_lb_edition=plus", "-e", f"vault_nginx_plus_license_jwt={LICENCE}",
        "-e", "vault_nginx_plus_registry_username=u", "-e", "vault_nginx_plus_registry_password=RENDER-DIR-PASSWORD"]


def render_playbook(work: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [*offline_prefix(), str(BIN / "ansible-playbook"), str(ROOT / "playbooks/render.yml"), "-i", str(ROOT / "inventories/dgx"), *VAULT_ARGS,
            "-e", "gpu_ops_render_dir=rel/out", *extra]
    return subprocess.run(argv, cwd=work, env=_env(work.parent), capture_output=True, text=True, timeout=400, check=False)


def test_render_playbook_owns_only_its_files_from_a_relative_dir(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    out = work / "rel" / "out"
    ok(render_playbook(work, *PLUS, "-e", "nginx_lb_create_namespace=true", "-e", "nginx_lb_namespace=nginx-lb"))
    # relative to where ansible-playbook was started, not to playbooks/
    assert (out / "mig-capacity.yaml").is_file()
    assert (out / "helm-releases.yaml").is_file()
    assert not (ROOT / "playbooks" / "rel").exists()
    secrets = out / "nginx_lb_secrets"
    assert mode(secrets) == 0o700
    assert sorted((p.name, mode(p)) for p in secrets.iterdir()) == [
        ("01-secret-nginx-lb-license.yaml", 0o600), ("02-secret-nginx-lb-registry.yaml", 0o600)]
    assert (out / "nginx_lb_namespace" / "01-namespace-nginx-lb.yaml").is_file()
    assert (out / "nginx_lb" / "07-podmonitor-nginx-lb.yaml").is_file()
    assert LICENCE not in (out / RECORD).read_text()
    # the user's own files beside the manifests
    (out / "nginx_lb" / "sealedsecret-plus-registry.yaml").write_text("kind: SealedSecret\n")
    (out / "triton" / "kustomization.yaml").write_text("resources: []\n")

    ok(render_playbook(work, "-e", "nginx_lb_monitor_kind=ServiceMonitor"))
    assert not secrets.exists(), "the Plus secrets must go with the Plus edition"
    assert not (out / "nginx_lb_namespace").exists()
    assert not (out / "nginx_lb" / "07-podmonitor-nginx-lb.yaml").exists()
    assert (out / "nginx_lb" / "07-servicemonitor-nginx-lb.yaml").is_file()
    assert (out / "nginx_lb" / "sealedsecret-plus-registry.yaml").read_text() == "kind: SealedSecret\n"
    assert (out / "triton" / "kustomization.yaml").read_text() == "resources: []\n"
    assert {"nginx_lb_secrets", "nginx_lb_namespace"}.isdisjoint(record(out)["components"])
    assert not any(LICENCE in p.read_text() for p in out.rglob("*") if p.is_file())
