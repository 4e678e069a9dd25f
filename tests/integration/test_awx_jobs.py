# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The MIG template as a real AWX job runs it.

AWX is configured by playbooks/awx_configure.yml (the awx.awx modules, unchanged) against tests/awx_fake; then the
"MIG apply" template is launched through the API with a survey answer and a limit, and the fake runs the job the way
AWX does (tests/awx_fake/jobs.py): the project checked out into the job's private data dir from the files git would
commit (this work tree, plus the site's own commit: its hosts and its mirror), the inventory imported from
``inventories/dgx`` by ``ansible-inventory --list --export`` and written out as the job's inventory script, the
extra vars file, the credentials injected, ansible-playbook started in the project with the private data dir mounted
at one fixed path (AWX: /runner in the execution environment). playbooks/mig.yml runs for real, not in check mode.

The GPU nodes are simulated (tests/gpu_sim) and use the local connection, so they live in the job's mount namespace:
each node is a set of overlays on /etc, /usr and /var whose upper directories are the node's disk (its simulated
driver and GPUs, then what the role installs and writes), kept from job to job; nothing reaches this machine's own
/etc, /usr or /var. The package comes from a mirror on 127.0.0.1 (a free port) with its sha256, as
inventories/dgx/group_vars/gpu_nodes.yml says a site sets it.

Needs root (mount namespaces and overlays), as the test bed's other node tests do.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
if TYPE_CHECKING:
    from tests.awx_fake import FakeAWX, ensure_awx_collection
    from tests.awx_fake.configure import SCM_URL, Harness, checkout_playbooks
    from tests.awx_fake.jobs import JobHost, ScmSource
else:
    from awx_fake import FakeAWX, ensure_awx_collection
    from awx_fake.configure import SCM_URL, Harness, checkout_playbooks
    from awx_fake.jobs import JobHost, ScmSource

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SIM = ROOT / "tests" / "gpu_sim"
NODE_PYTHON = "/usr/bin/python3"  # the nodes' python (Debian's, with python3-apt)
PACKAGE = "nvidia-mig-manager_0.13.0-1_amd64.deb"
MIRROR_PATH = f"/nvidia/mig-parted/{PACKAGE}"
H200 = "0x233510DE"
NODE_A, NODE_B = "sim-h200-a", "sim-h200-b"
GPU_NODES = ROOT / "inventories" / "dgx" / "group_vars" / "gpu_nodes.yml"
# what inventories/dgx/group_vars/gpu_nodes.yml said before it named the mirror
OLD_PACKAGE_LINE = 'mig_layout_package_file: "{{ inventory_dir }}/../packages/nvidia-mig-manager_0.13.0-1_amd64.deb"'
JOB_TIMEOUT = 300

pytestmark = pytest.mark.slow


class Mirror:
    """The site's package mirror: plain HTTP on 127.0.0.1 and a free port, serving one directory, recording paths."""

    def __init__(self, root: Path) -> None:
        self.paths: List[str] = []
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                mirror.paths.append(self.path)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name="mirror")
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
        assert not self.thread.is_alive()


def make_node(tmp: Path, name: str) -> Path:
    """A fresh simulated node: 8 x H200, MIG disabled, no nvidia-mig-manager. Its disk is the upper directories of
    overlays on /etc, /usr and /var, holding the simulated driver (tests/gpu_sim/install.sh) and the GPUs' state."""
    node = tmp / "nodes" / name
    staging = tmp / "nodes" / f"{name}.staging"
    staging.mkdir(parents=True)
    subprocess.run([str(SIM / "install.sh"), str(staging)], check=True, capture_output=True, timeout=60)
    for top in ("etc", "usr", "var"):
        (node / top / "work").mkdir(parents=True)
        shutil.copytree(staging / top, node / top / "upper", symlinks=True)
    shutil.rmtree(staging)
    sim(node, "gpu-sim", "init", "--model", "H200", "--count", "8")
    return node


def overlays(node: Path) -> List[Tuple[Path, Path]]:
    return [(Path(f"/{top}"), node / top) for top in ("etc", "usr", "var")]


def sim(node: Path, tool: str, *argv: str) -> str:
    """The node's simulated driver, run from here on its GPU state (tool: gpu-sim or nvidia-smi)."""
    env = dict(os.environ, GPU_SIM_STATE=str(node / "var" / "upper" / "lib" / "gpu-sim" / "state.json"))
    return subprocess.run([NODE_PYTHON, str(SIM / "bin" / tool), *argv], env=env, check=True, capture_output=True, text=True, timeout=60).stdout


def installed_version(node: Path) -> Optional[str]:
    """nvidia-mig-manager's version in the node's dpkg database, None when not installed."""
    status = node / "var" / "upper" / "lib" / "dpkg" / "status"
    if not status.is_file():
        return None
    for stanza in status.read_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" "))
        if fields.get("Package") == "nvidia-mig-manager" and fields.get("Status") == "install ok installed":
            return fields.get("Version")
    return None


def site_commit(bed: Dict[str, Any], source: str) -> Dict[str, Optional[str]]:
    """The site's own commit on top of this collection: its GPU nodes in hosts.yml, and the package source in
    group_vars/gpu_nodes.yml, the two lines the site edits (``mirror``: its mirror's URL and the file's sha256,
    ``none``: emptied, ``old``: the inventory_dir path of earlier versions)."""
    node_vars = {"ansible_connection": "local", "ansible_python_interpreter": NODE_PYTHON, "ansible_become": False,
                 "mig_layout_config": "all-balanced", "gpu_ops_node_gpus": {"count": 8, "pci_device_id": H200},
                 # the nodes run no systemd here: no GPU client units to look up
                 "mig_layout_gpu_clients": []}
    hosts = {"all": {"children": {"gpu_nodes": {"hosts": {NODE_A: node_vars, NODE_B: node_vars}}}}}
    text = GPU_NODES.read_text()
    url = re.findall(r"^mig_layout_package_url: .*$", text, re.M)
    checksum = re.findall(r"^mig_layout_package_checksum: .*$", text, re.M)
    assert len(url) == 1, "gpu_nodes.yml no longer sets the mirror URL, on one line"
    assert len(checksum) == 1, "gpu_nodes.yml no longer sets the checksum, on one line"
    new_url, new_checksum = {
        "mirror": (f"mig_layout_package_url: {bed['mirror'].url}{MIRROR_PATH}", f'mig_layout_package_checksum: "sha256:{bed["sha256"]}"'),
        "none": ('mig_layout_package_url: ""', 'mig_layout_package_checksum: ""'),
        "old": ('mig_layout_package_url: ""', OLD_PACKAGE_LINE),
    }[source]
    text = text.replace(url[0], new_url).replace(checksum[0], new_checksum)
    return {"inventories/dgx/hosts.yml": yaml.safe_dump(hosts), "inventories/dgx/group_vars/gpu_nodes.yml": text}


def api(awx: FakeAWX, method: str, path: str, body: Any = None) -> Tuple[int, Any]:
    req = urllib.request.Request(f"{awx.url}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {awx.token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            is_text = resp.headers.get("Content-Type", "").startswith("text/plain")
            return resp.status, raw.decode() if is_text else (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def template_id(awx: FakeAWX, name: str) -> int:
    found: int = awx.find("job_templates", f"gpu_ops {name}")["id"]
    return found


def run_job(bed: Dict[str, Any], node: Path, source: str, launch: Dict[str, Any]) -> Dict[str, Any]:
    """Point the site's commit at ``source``, make ``node`` the machine the job's local connection reaches, launch the
    MIG template through the API and wait for the job; the launch answer, the job, its txt output, its private data
    dir (kept)."""
    awx: FakeAWX = bed["awx"]
    awx.scm[SCM_URL].changes = site_commit(bed, source)
    bed["host"].node_overlays = overlays(node)
    status, answer = api(awx, "POST", f"/api/v2/job_templates/{template_id(awx, 'MIG apply')}/launch/", launch)
    assert status == 201, answer
    assert answer["status"] == "pending"
    awx.wait_job(answer["job"], JOB_TIMEOUT)
    status, job = api(awx, "GET", f"/api/v2/jobs/{answer['job']}/")
    assert status == 200
    status, stdout = api(awx, "GET", f"/api/v2/jobs/{answer['job']}/stdout/?format=txt")
    assert status == 200
    assert isinstance(stdout, str)
    (pdd,) = bed["host"].work_dir.glob(f"awx_{answer['job']}_*")
    return {"launch": answer, "job": job, "stdout": stdout, "flat": " ".join(stdout.split()), "pdd": pdd}


def recap(stdout: str, host: str) -> Dict[str, int]:
    m = re.search(rf"^{re.escape(host)}\s+: ((?:\w+=\d+\s*)+)$", stdout, re.M)
    assert m, stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("the jobs run in a mount namespace with overlays for the simulated nodes: needs root and unshare (CI runs as root)")
    tmp = tmp_path_factory.mktemp("awx-jobs")
    collections = ensure_awx_collection(ROOT / "build")
    subprocess.run([str(SIM / "packaging" / "build-deb.sh"), "0.13.0", str(tmp / "mirror" / "nvidia" / "mig-parted")], check=True,
                   capture_output=True, timeout=120)
    deb = tmp / "mirror" / "nvidia" / "mig-parted" / PACKAGE
    runner = tmp / "runner"
    runner.mkdir()
    host = JobHost(work_dir=tmp / "jobs", bin_dir=BIN, runner_dir=runner, keep=True, timeout_s=JOB_TIMEOUT,
                   env={"PATH": f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    mirror = Mirror(tmp / "mirror")
    try:
        with FakeAWX(playbooks=checkout_playbooks(), scm={SCM_URL: ScmSource(ROOT)}, job_host=host) as awx:
            # the templates pass the layouts file by its path in the job's project: where the fake mounts it
            (tmp / "configure").mkdir()
            harness = Harness(tmp / "configure", collections, awx, settings={"awx_configure_project_dir_at_runtime": f"{runner}/project"})
            configured = harness.run()
            assert configured.proc.returncode == 0, configured.output[-6000:]
            yield {"tmp": tmp, "awx": awx, "host": host, "runner": runner, "mirror": mirror, "sha256": hashlib.sha256(deb.read_bytes()).hexdigest(),
                   "node_a": make_node(tmp, NODE_A), "node_b": make_node(tmp, NODE_B)}
    finally:
        mirror.stop()


@pytest.fixture(scope="module")
def first_job(bed: Dict[str, Any]) -> Dict[str, Any]:
    """Node A, fresh, gets the package from the mirror and the survey's layout; the launch also tries a variable the
    template does not prompt for and tags it does not ask for."""
    launch = {"extra_vars": {"mig_layout_config": "all-1g.18gb", "mig_layout_package_url": "http://127.0.0.1:9/elsewhere.deb"},
              "limit": NODE_A, "job_tags": "mig_layout_preflight"}
    return run_job(bed, bed["node_a"], "mirror", launch)


def test_the_mig_template_installs_from_the_mirror_and_applies_the_survey_layout(bed: Dict[str, Any], first_job: Dict[str, Any]) -> None:
    job, stdout, node = first_job["job"], first_job["stdout"], bed["node_a"]
    assert job["status"] == "successful", f"{job['job_explanation']}\n{stdout[-6000:]}"
    # AWX ignored what the template does not prompt for, and said so: the survey answer alone went through
    assert first_job["launch"]["ignored_fields"] == {"extra_vars": {"mig_layout_package_url": "http://127.0.0.1:9/elsewhere.deb"},
                                                     "job_tags": "mig_layout_preflight"}
    assert job["limit"] == NODE_A
    assert job["job_tags"] == ""
    stats = recap(stdout, NODE_A)
    assert stats["failed"] == 0, stats
    assert stats["changed"] > 0, stats
    assert "Install the package (Debian family)" in stdout
    # the node downloaded the package from the mirror, once, and installed it
    assert bed["mirror"].paths == [MIRROR_PATH]
    assert installed_version(node) == "0.13.0-1"
    # the survey's layout, not the host's own all-balanced: 8 GPUs x 7 x 1g.18gb
    listing = sim(node, "nvidia-smi", "-L")
    assert listing.count("MIG 1g.18gb") == 56, listing
    assert "MIG 3g.71gb" not in listing


def test_the_job_ran_as_awx_runs_it(bed: Dict[str, Any], first_job: Dict[str, Any]) -> None:
    awx: FakeAWX = bed["awx"]
    job, pdd, runner = first_job["job"], first_job["pdd"], str(bed["runner"])
    args = json.loads(job["job_args"])
    # ansible-runner's command: AWX's arguments, the generated inventory, the extra vars file, the playbook; cwd the project
    assert args[-1] == "playbooks/mig.yml"
    assert args[args.index("-i") + 1] == f"{runner}/inventory/hosts"
    assert args[args.index("-e") + 1] == f"@{runner}/env/extravars"
    assert args[args.index("-u") + 1] == "ansible"  # the Machine credential's user
    assert args[args.index("-l") + 1] == NODE_A
    assert "--vault-password-file" in args
    assert job["job_cwd"] == f"{runner}/project"
    # the kubeconfig credential: a private file of the job, named by K8S_AUTH_KUBECONFIG
    kubeconfig = job["job_env"]["K8S_AUTH_KUBECONFIG"]
    assert kubeconfig.startswith(f"{runner}/env/")
    assert "kube-token-5d2e8b" in (pdd / Path(kubeconfig).relative_to(runner)).read_text()
    assert oct((pdd / Path(kubeconfig).relative_to(runner)).stat().st_mode & 0o777) == "0o600"
    # extra vars: the template's own plain, the survey answer and AWX's variables never templated
    extravars = (pdd / "env" / "extravars").read_text()
    assert f"mig_layout_config_file: {runner}/project/inventories/layouts/dgx.yaml" in extravars
    assert "!unsafe 'mig_layout_config': !unsafe 'all-1g.18gb'" in extravars
    assert "mig_layout_package_url" not in extravars
    # the checkout: what git carries, and the site's commit; ignored files (packages, build/, .venv) never
    project = pdd / "project"
    assert sorted(p.name for p in (project / "inventories" / "packages").iterdir()) == ["README.md"]
    assert not (project / "build").exists()
    assert not (project / ".venv").exists()
    assert (project / "collections" / "ansible_collections" / "gpu_ops" / "mig_serving").is_symlink()
    assert NODE_A in (project / "inventories" / "dgx" / "hosts.yml").read_text()
    # the inventory: imported (Jinja kept as text, group vars on their group), then written out for the job
    inventory_id = awx.find("inventories", "gpu_ops dgx")["id"]
    imported = awx.imported_inventory(inventory_id)
    assert imported["groups"]["gpu_nodes"]["variables"]["mig_layout_config_file"] == "{{ inventory_dir }}/../layouts/dgx.yaml"
    assert imported["variables"]["gpu_ops_k8s_mode"] == "apply"  # group_vars/all.yml: the inventory's variables
    assert "mig_layout_config_file" not in imported["hosts"][NODE_A]
    script = pdd / "inventory" / "hosts"
    printed = json.loads(subprocess.run([str(script)], capture_output=True, text=True, check=True, timeout=30,
                                        env={"PATH": f"{BIN}:/usr/bin:/bin"}).stdout)
    status, served = api(awx, "GET", f"/api/v2/inventories/{inventory_id}/script/?hostvars=1&towervars=1")
    assert status == 200
    assert printed == served
    assert printed["_meta"]["hostvars"][NODE_A]["remote_tower_enabled"] == "true"
    updates = awx.objects("inventory_updates")
    assert updates
    assert all(u["status"] == "successful" for u in updates)


def test_a_node_at_the_version_needs_no_package_source(bed: Dict[str, Any], first_job: Dict[str, Any]) -> None:
    """Node A has 0.13.0 now: with no package source at all, the job succeeds and changes nothing. Node B, fresh,
    with the same inventory, needs the install and fails in preflight naming itself and the missing source."""
    assert first_job["job"]["status"] == "successful"
    requests_before = list(bed["mirror"].paths)
    log_a = sim(bed["node_a"], "gpu-sim", "log")
    at_version = run_job(bed, bed["node_a"], "none", {"extra_vars": {"mig_layout_config": "all-1g.18gb"}, "limit": NODE_A})
    assert at_version["job"]["status"] == "successful", at_version["stdout"][-6000:]
    assert recap(at_version["stdout"], NODE_A)["changed"] == 0
    assert "needs nvidia-mig-manager" not in at_version["stdout"]
    assert "Install the package" not in at_version["stdout"]
    assert sim(bed["node_a"], "gpu-sim", "log") == log_a, "the GPUs of a node in its layout were touched"

    log_b = sim(bed["node_b"], "gpu-sim", "log")
    fresh = run_job(bed, bed["node_b"], "none", {"extra_vars": {"mig_layout_config": "all-1g.18gb"}, "limit": NODE_B})
    assert fresh["job"]["status"] == "failed"
    assert (f"{NODE_B} needs nvidia-mig-manager 0.13.0 (installed: none), and has no package source: set mig_layout_package_url "
            "(the site mirror) with mig_layout_package_checksum") in fresh["flat"], fresh["stdout"][-4000:]
    assert installed_version(bed["node_b"]) is None
    assert sim(bed["node_b"], "gpu-sim", "log") == log_b
    assert not (bed["node_b"] / "etc" / "upper" / "gpu-ops").exists(), "preflight wrote on the node"
    assert bed["mirror"].paths == requests_before


def test_the_old_inventory_dir_path_fails_in_preflight(bed: Dict[str, Any]) -> None:
    """What inventories/dgx said before: a path from inventory_dir. In the job inventory_dir is the private data dir's
    inventory/ (AWX's copy of the imported inventory), and the .deb, git-ignored, is in no checkout anyway."""
    assert not [f for f in ScmSource(ROOT).tree() if f.startswith("inventories/packages/") and f.endswith((".deb", ".rpm"))]
    assert not [f for f in ScmSource(ROOT).tree() if f.startswith(("build/", ".venv/"))], "an ignored file reached the checkout"
    assert (ROOT / "build").is_dir()
    log_b = sim(bed["node_b"], "gpu-sim", "log")
    old = run_job(bed, bed["node_b"], "old", {"extra_vars": {"mig_layout_config": "all-1g.18gb"}, "limit": NODE_B})
    assert old["job"]["status"] == "failed"
    runner = bed["runner"]
    assert (f"{NODE_B} needs nvidia-mig-manager 0.13.0 (installed: none), but mig_layout_package_file "
            f"'{runner}/inventory/../packages/{PACKAGE}' is not a file on the controller") in old["flat"], old["stdout"][-4000:]
    assert "inventory_dir there is AWX's copy of the inventory, not the project" in old["flat"]
    assert installed_version(bed["node_b"]) is None
    assert sim(bed["node_b"], "gpu-sim", "log") == log_b


def test_a_survey_answer_outside_its_choices_is_refused(bed: Dict[str, Any]) -> None:
    awx: FakeAWX = bed["awx"]
    jobs_before = len(awx.objects("jobs"))
    status, body = api(awx, "POST", f"/api/v2/job_templates/{template_id(awx, 'MIG apply')}/launch/",
                       {"extra_vars": {"mig_layout_config": "all-7g.141gb"}, "limit": NODE_A})
    assert status == 400
    (message,) = body["variables_needed_to_start"]
    assert message.startswith("Value all-7g.141gb for 'mig_layout_config' expected to be one of ['all-disabled', ")
    assert len(awx.objects("jobs")) == jobs_before, "a refused launch made a job"
