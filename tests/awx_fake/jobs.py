# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How the fake AWX runs a job: test equipment, never shipped.

What AWX's task system does between ``POST .../launch/`` and ansible-playbook's exit, reproduced from AWX 24.x
and ansible-runner 2.4 (the sources named per function below; README.md next to this file lists what is and is not
reproduced):

- the project sync: a project's git URL maps to a :class:`ScmSource`, whose checkout holds the files a commit of its
  work tree carries (``git ls-files``: ignored files, such as ``inventories/packages/*.deb``, never), plus a site's
  own changes on top; AWX copies it into the job's private data dir as ``project/``;
- the inventory update of an SCM inventory source: ``ansible-inventory --list --export`` on the source path of a
  fresh checkout, loaded into "the database" (:func:`load_inventory`) and written out for the job as
  ``inventory/hosts``, an executable script printing the imported hosts, groups and variables: the job's
  ``inventory_dir`` is therefore the private data dir's ``inventory/``, never the project's inventory directory;
- the job: ``env/extravars`` (template extra vars, survey defaults and answers, AWX's ``awx_*`` variables, the
  strings not set on the template marked ``!unsafe``), the credentials injected, the command line ansible-runner
  builds, run with the private data dir mounted at a fixed path (AWX: ``/runner`` inside the execution environment
  container) and the project as the working directory, bounded in time.
"""
from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

Obj = Dict[str, Any]

HIDDEN = "**********"  # what AWX shows for a secret value in job_env (awx/main/constants.py HIDDEN_PASSWORD)
# build_safe_env (awx/main/utils/common.py) hides environment values whose name looks secret
_SECRET_NAME = re.compile(r"API|TOKEN|KEY|SECRET|PASS", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# AWX's settings/defaults.py: "Any ANSIBLE_* settings will be passed to the task runner subprocess environment"
AWX_ANSIBLE_SETTINGS = {"ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_PARAMIKO_RECORD_HOST_KEYS": "False",
                        "ANSIBLE_FORCE_COLOR": "True", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"}


class JobError(Exception):
    """A step before ansible-playbook failed (sync, inventory import, credential injection): the job's explanation."""


def strip_ansi(text: str) -> str:
    """What ``stdout/?format=txt`` returns: the output without terminal colours."""
    return _ANSI.sub("", text)


def safe_env(env: Dict[str, str]) -> Dict[str, str]:
    return {k: (HIDDEN if _SECRET_NAME.search(k) else v) for k, v in env.items()}


# ----------------------------------------------------------------------------------------------- project checkout
@dataclass
class ScmSource:
    """What a project's git URL holds.

    ``root`` is a git work tree; its checkout holds what ``git ls-files --cached --others --exclude-standard`` lists
    (the tracked files and new ones a commit of the working tree would add; never an ignored file), symlinks kept.
    ``changes`` is a site's commit on top (path -> new text, or None to delete): its own inventory, its mirror.
    """

    root: Path
    changes: Dict[str, Optional[str]] = field(default_factory=dict)

    def tree(self) -> List[str]:
        proc = subprocess.run(["git", "-C", str(self.root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                              capture_output=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise JobError(f"git ls-files in {self.root} failed: {proc.stderr.decode(errors='replace').strip()}")
        names = {n for n in proc.stdout.decode().split("\0") if n}
        return sorted(n for n in names if os.path.lexists(self.root / n))  # a tracked file deleted in the work tree is gone

    def checkout(self, dest: Path) -> str:
        """Write the checkout into ``dest`` (which must not exist) and return its revision (a digest of the content)."""
        digest = hashlib.sha1()
        dest.mkdir(parents=True)
        for name in self.tree():
            if name in self.changes:
                continue
            src, out = self.root / name, dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                target = os.readlink(src)
                os.symlink(target, out)
                digest.update(f"{name}\0link\0{target}\0".encode())
            elif src.is_file():
                data = src.read_bytes()
                out.write_bytes(data)
                out.chmod(0o755 if os.access(src, os.X_OK) else 0o644)
                digest.update(f"{name}\0{hashlib.sha1(data).hexdigest()}\0".encode())
        for name, text in sorted(self.changes.items()):
            if text is None:
                continue
            out = dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            digest.update(f"{name}\0{hashlib.sha1(text.encode()).hexdigest()}\0".encode())
        return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- inventory
def load_inventory(data: Obj) -> Obj:
    """``ansible-inventory --list --export`` output as AWX's importer stores it (awx/main/utils/mem_inventory.py,
    dict_to_mem_data): the variables of ``all`` (and ``ungrouped``) become the inventory's variables, every other
    group keeps its own variables, hosts and children, and ``_meta.hostvars`` are the hosts' own variables. With
    ``--export`` group variables stay on their group: nothing is merged into the hosts, and no Jinja is evaluated."""
    inv: Obj = {"variables": {}, "groups": {}, "hosts": {}}
    meta = data.get("_meta", {})

    def group(name: str) -> Optional[Obj]:
        if name in ("all", "ungrouped"):
            return None
        found: Obj = inv["groups"].setdefault(name, {"variables": {}, "hosts": [], "children": []})
        return found

    for name, entry in data.items():
        if name == "_meta":
            continue
        target = group(name)
        value = {"hosts": entry} if isinstance(entry, list) else entry
        if not isinstance(value, dict):
            continue
        hosts = value.get("hosts", [])
        for host in (hosts.keys() if isinstance(hosts, dict) else hosts):
            inv["hosts"].setdefault(host, {})
            if isinstance(hosts, dict) and isinstance(hosts[host], dict):
                inv["hosts"][host].update(hosts[host])
            if target is not None and host not in target["hosts"]:
                target["hosts"].append(host)
        variables = value.get("vars", {})
        if isinstance(variables, dict):
            (inv["variables"] if target is None else target["variables"]).update(variables)
        for child in value.get("children", []):
            child_group = group(child)
            if target is not None and child_group is not None and child not in target["children"]:
                target["children"].append(child)
    for host, host_vars in inv["hosts"].items():
        extra = meta.get("hostvars", {}).get(host, {})
        if isinstance(extra, dict):
            host_vars.update(extra)
    return inv


def script_data(inv: Obj, host_ids: Dict[str, int]) -> Obj:
    """Inventory.get_script_data(hostvars=True, towervars=True) (awx/main/models/inventory.py): what the job's
    inventory script prints."""
    data: Obj = {"all": {}}
    if inv["variables"]:
        data["all"]["vars"] = inv["variables"]
    grouped = {h for g in inv["groups"].values() for h in g["hosts"]}
    data["all"]["hosts"] = [h for h in sorted(inv["hosts"]) if h not in grouped]
    for name in sorted(inv["groups"]):
        g = inv["groups"][name]
        info: Obj = {}
        if g["hosts"]:
            info["hosts"] = list(g["hosts"])
        if g["children"]:
            info["children"] = list(g["children"])
        if g["variables"]:
            info["vars"] = g["variables"]
        if info:
            data[name] = info
    if inv["groups"]:
        data["all"]["children"] = sorted(inv["groups"])
    data["_meta"] = {"hostvars": {h: dict(v, remote_tower_enabled="true", remote_tower_id=host_ids.get(h, 0))
                                  for h, v in sorted(inv["hosts"].items())}}
    return data


# ----------------------------------------------------------------------------------------------- extra vars
class _UnsafeStrings(yaml.SafeDumper):
    """Every string, keys included, tagged !unsafe: Ansible then never templates it."""

    def represent_data(self, data: Any) -> yaml.Node:
        if isinstance(data, str):
            return self.represent_scalar("!unsafe", data)
        return super().represent_data(data)


def dump_extra_vars(values: Obj, trusted: Obj) -> str:
    """env/extravars as AWX writes it with ALLOW_JINJA_IN_EXTRA_VARS='template' (awx/main/utils/safe_yaml.py
    safe_dump): a top-level variable equal to the template's own extra var is written plain; everything else (survey
    answers, prompted variables, AWX's awx_* variables) has its strings marked !unsafe."""
    parts = []
    for key, value in values.items():
        dumper = yaml.SafeDumper if key in trusted and trusted[key] == value else _UnsafeStrings
        parts.append(yaml.dump({key: value}, Dumper=dumper, default_flow_style=False))
    return "".join(parts)


# ----------------------------------------------------------------------------------------------- running
@dataclass
class JobHost:
    """Where and how jobs run: the execution environment's stand-in on this machine.

    - ``work_dir``: where private data dirs are made (AWX_ISOLATION_BASE_PATH);
    - ``bin_dir``: the Ansible of the "EE" (ansible-playbook, ansible-inventory);
    - ``runner_dir``: an empty directory on which each job's private data dir is bind-mounted in a private mount
      namespace, as AWX mounts it at ``/runner`` in the EE container: paths the job sees (the project, the inventory,
      injected files) are under it, at the same place for every job. None: the job sees its private data dir's path;
    - ``node_overlays``: (system directory, node directory) pairs, test equipment for GPU nodes that use the local
      connection (they live in the job's mount namespace): the system directory (/etc, /usr, /var) is overlaid with
      ``<node directory>/upper`` (what the node has written, kept from job to job: the node's disk) and ``/work``;
    - ``env``: the environment of the EE (PATH first of all); ``timeout_s``: the bound on a job's run;
    - ``keep``: keep private data dirs after the job (AWX_CLEANUP_PATHS=False), to look into them.
    Mounting needs root (CI runs as root).
    """

    work_dir: Path
    bin_dir: Path
    runner_dir: Optional[Path] = None
    node_overlays: List[Tuple[Path, Path]] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    timeout_s: float = 600.0
    keep: bool = False
    _proc: Optional[subprocess.Popen[bytes]] = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def in_job(self, pdd: Path, path: Path) -> str:
        """A path of the private data dir as the job sees it (get_incontainer_path)."""
        return str(path) if self.runner_dir is None else str(self.runner_dir / path.relative_to(pdd))

    def new_private_data_dir(self, prefix: str) -> Path:
        """build_private_data_dir: a fresh 0700 directory with inventory/ and env/."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        pdd = Path(tempfile.mkdtemp(prefix=prefix, dir=self.work_dir))
        pdd.chmod(stat.S_IRWXU)
        for sub in ("inventory", "env"):
            (pdd / sub).mkdir()
        return pdd

    def cleanup(self, pdd: Path) -> None:
        if not self.keep:
            shutil.rmtree(pdd, ignore_errors=True)

    def allow(self) -> None:
        """Let jobs run again (FakeAWX.start), after a kill()."""
        with self._lock:
            self._stopped = False

    def kill(self) -> None:
        """Stop the running job, if any (FakeAWX.stop)."""
        with self._lock:
            self._stopped = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    def run(self, argv: List[str], env: Dict[str, str], pdd: Path, cwd: str, isolated: bool, timeout_s: float) -> Tuple[int, str, bool]:
        """Run ``argv`` (rc, output, timed out). ``isolated``: in a private mount namespace with the private data dir
        at ``runner_dir`` and the node overlays, the working directory ``cwd`` as the job sees it."""
        if isolated and (self.runner_dir is not None or self.node_overlays):
            lines = ["set -eu"]
            if self.runner_dir is not None:
                lines.append(f"mount --bind {shlex.quote(str(pdd))} {shlex.quote(str(self.runner_dir))}")
            for system_dir, node_dir in self.node_overlays:
                parts = [str(system_dir), str(node_dir / "upper"), str(node_dir / "work")]
                if any(c in p for p in parts for c in ",: "):
                    raise JobError(f"overlay paths may not hold ',', ':' or spaces: {parts}")
                options = f"lowerdir={parts[0]},upperdir={parts[1]},workdir={parts[2]}"
                lines.append(f"mount -t overlay overlay -o {options} {shlex.quote(parts[0])}")
            lines.append(f"cd {shlex.quote(cwd)}")
            lines.append('exec "$@"')
            command = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(lines), "awx-job", *argv]
            start_dir = str(pdd)
        else:
            command, start_dir = argv, cwd
        with self._lock:
            if self._stopped:
                return -1, "the fake AWX was stopped before the job started\n", False
            proc = subprocess.Popen(command, cwd=start_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            self._proc = proc
        try:
            out = proc.communicate(timeout=timeout_s)[0]
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out = proc.communicate(timeout=30)[0]
            timed_out = True
        finally:
            with self._lock:
                self._proc = None
        return proc.returncode, out.decode(errors="replace"), timed_out

    # ------------------------------------------------------------------------------------------- AWX's steps
    def base_env(self) -> Dict[str, str]:
        env = dict(self.env)
        env.update(AWX_ANSIBLE_SETTINGS)
        return env

    def import_inventory(self, source: ScmSource, source_path: str, update_id: int) -> Tuple[Obj, str, str]:
        """An SCM inventory update (RunInventoryUpdate): a fresh checkout of the source project and
        ``ansible-inventory --list --export -i project/<source_path> --output ... --playbook-dir ...``; the inventory
        as stored (load_inventory), the revision synced and the command's output."""
        pdd = self.new_private_data_dir(f"awx_{update_id}_")
        try:
            revision = source.checkout(pdd / "project")
            src = pdd / "project" / source_path
            if not src.exists():
                raise JobError(f"source_path {source_path!r} is not in the project's checkout")
            output = pdd / "artifacts" / str(update_id) / "output.json"
            output.parent.mkdir(parents=True)
            argv = [str(self.bin_dir / "ansible-inventory"), "--list", "--export", "-i", str(src), "--output", str(output),
                    "--playbook-dir", str(src if src.is_dir() else src.parent)]
            env = dict(self.base_env(), HOME=str(pdd), INVENTORY_SOURCE_ID=str(update_id), INVENTORY_UPDATE_ID=str(update_id))
            rc, text, timed_out = self.run(argv, env, pdd, str(pdd / "project"), isolated=False, timeout_s=min(self.timeout_s, 300))
            if rc != 0 or timed_out or not output.is_file():
                raise JobError(f"ansible-inventory exited {rc}{' (timed out)' if timed_out else ''}:\n{text[-4000:]}")
            return load_inventory(json.loads(output.read_text())), revision, text
        finally:
            self.cleanup(pdd)


def read_ansible_config(project: Path, names: List[str]) -> Dict[str, str]:
    """The [defaults] settings AWX reads from the project's ansible.cfg (awx/main/utils/ansible.py)."""
    cfg = configparser.ConfigParser(interpolation=None)
    try:
        cfg.read(project / "ansible.cfg")
    except configparser.Error:
        return {}
    return {n: cfg.get("defaults", n) for n in names if cfg.has_option("defaults", n)}


def path_setting(default: str, configured: Optional[str], folder: str, runner_root: str) -> str:
    """RunJob.build_env's search paths: the private data dir's folder first, then the project's ansible.cfg value,
    then the defaults (the whole configured value is put in front once for each of its paths not among the defaults,
    as AWX does)."""
    paths = default.split(":")
    if configured:
        for path in configured.split(":"):
            if path not in paths:
                paths = [configured, *paths]
    return ":".join([f"{runner_root}/{folder}", *paths])


def render_injectors(ctype: Obj, inputs: Obj, pdd: Path, host: JobHost) -> Tuple[Dict[str, str], List[str], Dict[str, str]]:
    """CredentialType.inject_credential for a custom type (awx/main/models/credential.py): each file template
    rendered into a private file of env/ (0600), named to the job as tower.filename[.<id>] by its in-job path; env
    variables rendered; extra_vars rendered into a file passed as ``-e @file``. Rendering: Jinja's immutable sandbox,
    undefined names are errors. Returns (env, args, files written: in-job path -> text)."""
    sandbox = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    injectors = ctype.get("injectors") or {}
    namespace: Obj = dict(inputs)
    filenames: Obj = {}
    written: Dict[str, str] = {}
    for key, template in (injectors.get("file") or {}).items():
        text = sandbox.from_string(template).render(**namespace)
        handle, name = tempfile.mkstemp(dir=pdd / "env")
        with os.fdopen(handle, "w") as f:
            f.write(text)
        os.chmod(name, 0o600)
        in_job = host.in_job(pdd, Path(name))
        written[in_job] = text
        file_id = key.partition(".")[2]
        if file_id:
            filenames[file_id] = in_job
        else:
            filenames["__single__"] = in_job

    class _Filename(dict):  # type: ignore[type-arg]
        def __str__(self) -> str:
            return str(self.get("__single__", ""))

    namespace["tower"] = {"filename": _Filename(filenames)}
    env = {k: sandbox.from_string(v).render(**namespace) for k, v in (injectors.get("env") or {}).items()}
    args: List[str] = []
    if injectors.get("extra_vars"):
        extra = {k: sandbox.from_string(v).render(**namespace) for k, v in injectors["extra_vars"].items()}
        handle, name = tempfile.mkstemp(dir=pdd / "env")
        with os.fdopen(handle, "w") as f:
            f.write(dump_extra_vars(extra, {}))
        args += ["-e", f"@{host.in_job(pdd, Path(name))}"]
    return env, args, written
