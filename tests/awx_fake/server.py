# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small in-memory AWX REST API (/api/v2/) for tests: test equipment, never shipped.

It serves what the awx.awx modules used by playbooks/awx_configure.yml call, in AWX's wire formats and with
the rules those modules rely on (see README.md next to this file for what it reproduces and what it does not):

- token authentication (``POST /api/v2/tokens/`` with basic auth, then ``Authorization: Bearer``);
- list views with ``count``/``next``/``previous``/``results``, pagination (``page``, ``page_size``) and
  filters by field value, ``or__`` filters (lookups by name or id);
- ``POST`` to create (201, the object), ``PATCH`` to update (200, the object), ``DELETE`` (204), errors as
  400 with field messages;
- sub-lists for associations (``POST {"id": N}`` / ``{"id": N, "disassociate": true}`` -> 204);
- job template ``survey_spec`` (GET, POST, DELETE) with AWX's survey validation;
- project updates that finish at once (``summary_fields.current_update``), the project's playbook list
  checked when a job template names a playbook;
- secret credential inputs stored but returned as ``$encrypted$``;
- schedules with an RRULE parsed by dateutil (as AWX does) and prompts checked against the template;
- job launches (``POST /api/v2/job_templates/N/launch/``: survey answers validated and merged into the extra vars,
  prompts accepted or ignored as AWX does) and the jobs themselves, run as AWX runs them (jobs.py: project checkout,
  inventory import, private data dir, credentials, ansible-playbook): ``GET /api/v2/jobs/N/`` and its ``stdout/``.

    with FakeAWX(playbooks={"site.yml"}) as awx:
        run(["ansible-playbook", ..., "-e", f"awx_configure_controller_host={awx.url}", "-e", f"awx_configure_controller_token={awx.token}"])
        assert awx.find("job_templates", "gpu_ops site")["playbook"] == "site.yml"
"""
from __future__ import annotations

import base64
import contextlib
import copy
import importlib
import json
import re
import secrets
import shlex
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit

import yaml

from .jobs import JobError, JobHost, ScmSource, dump_extra_vars, path_setting, read_ansible_config, render_injectors, safe_env, script_data, strip_ansi

Obj = Dict[str, Any]

# AWX parses schedules with python-dateutil too (installed with the kubernetes client; no type stubs here)
dateutil_rrule: Any = importlib.import_module("dateutil.rrule")

AWX_VERSION = "24.6.1"
ENCRYPTED = "$encrypted$"
MAX_BODY = 1024 * 1024

# Per resource: its object type, required fields on create, defaults, foreign keys (field -> resource),
# the fields a name must be unique within, and its sub-lists (associations).
RESOURCES: Dict[str, Obj] = {
    "organizations": {"type": "organization", "required": ["name"], "defaults": {"description": "", "max_hosts": 0, "default_environment": None},
                      "fk": {"default_environment": "execution_environments"}, "unique": [], "sublists": ["instance_groups", "galaxy_credentials"]},
    "execution_environments": {"type": "execution_environment", "required": ["name", "image"],
                               "defaults": {"description": "", "organization": None, "credential": None, "pull": "", "managed": False},
                               "fk": {"organization": "organizations", "credential": "credentials"}, "unique": [], "sublists": []},
    "projects": {"type": "project", "required": ["name", "organization"],
                 "defaults": {"description": "", "scm_type": "", "scm_url": "", "scm_branch": "", "scm_refspec": "", "scm_clean": False,
                              "scm_delete_on_update": False, "scm_track_submodules": False, "scm_update_on_launch": False,
                              "scm_update_cache_timeout": 0, "allow_override": False, "timeout": 0, "credential": None, "default_environment": None,
                              "signature_validation_credential": None, "local_path": "", "custom_virtualenv": None, "scm_revision": "", "status": "new"},
                 "fk": {"organization": "organizations", "credential": "credentials", "default_environment": "execution_environments",
                        "signature_validation_credential": "credentials"},
                 "unique": ["organization"], "sublists": ["notification_templates_started", "notification_templates_success", "notification_templates_error"]},
    "project_updates": {"type": "project_update", "required": [], "defaults": {}, "fk": {}, "unique": None, "sublists": []},
    "credential_types": {"type": "credential_type", "required": ["name", "kind"],
                         "defaults": {"description": "", "managed": False, "inputs": {}, "injectors": {}, "namespace": None},
                         "fk": {}, "unique": [], "sublists": []},
    "credentials": {"type": "credential", "required": ["name", "credential_type"],
                    "defaults": {"description": "", "organization": None, "inputs": {}, "managed": False, "cloud": False, "kubernetes": False},
                    "fk": {"organization": "organizations", "credential_type": "credential_types"},
                    "unique": ["organization", "credential_type"], "sublists": []},
    "inventories": {"type": "inventory", "required": ["name", "organization"],
                    "defaults": {"description": "", "kind": "", "host_filter": None, "variables": "", "prevent_instance_group_fallback": False},
                    "fk": {"organization": "organizations"}, "unique": ["organization"], "sublists": ["instance_groups", "input_inventories"]},
    "inventory_sources": {"type": "inventory_source", "required": ["name", "inventory"],
                          "defaults": {"description": "", "source": "", "source_path": "", "source_vars": "", "source_project": None, "credential": None,
                                       "execution_environment": None, "enabled_var": "", "enabled_value": "", "host_filter": "", "limit": "",
                                       "overwrite": False, "overwrite_vars": False, "custom_virtualenv": None, "timeout": 0, "verbosity": 1,
                                       "update_on_launch": False, "update_cache_timeout": 0, "scm_branch": ""},
                          "fk": {"inventory": "inventories", "source_project": "projects", "credential": "credentials",
                                 "execution_environment": "execution_environments"},
                          "unique": ["inventory"],
                          "sublists": ["notification_templates_started", "notification_templates_success", "notification_templates_error"]},
    "job_templates": {"type": "job_template", "required": ["name", "project", "playbook"],
                      "defaults": {"description": "", "job_type": "run", "inventory": None, "organization": None, "execution_environment": None,
                                   "scm_branch": "", "forks": 0, "limit": "", "verbosity": 0, "extra_vars": "", "job_tags": "", "force_handlers": False,
                                   "skip_tags": "", "start_at_task": "", "timeout": 0, "use_fact_cache": False, "host_config_key": "",
                                   "ask_scm_branch_on_launch": False, "ask_diff_mode_on_launch": False, "ask_variables_on_launch": False,
                                   "ask_limit_on_launch": False, "ask_tags_on_launch": False, "ask_skip_tags_on_launch": False,
                                   "ask_job_type_on_launch": False, "ask_verbosity_on_launch": False, "ask_inventory_on_launch": False,
                                   "ask_credential_on_launch": False, "ask_execution_environment_on_launch": False, "ask_forks_on_launch": False,
                                   "ask_instance_groups_on_launch": False, "ask_job_slice_count_on_launch": False, "ask_labels_on_launch": False,
                                   "ask_timeout_on_launch": False, "survey_enabled": False, "become_enabled": False, "diff_mode": False,
                                   "allow_simultaneous": False, "custom_virtualenv": None, "job_slice_count": 1, "webhook_service": "",
                                   "webhook_credential": None, "prevent_instance_group_fallback": False},
                      "fk": {"project": "projects", "inventory": "inventories", "organization": "organizations",
                             "execution_environment": "execution_environments", "webhook_credential": "credentials"},
                      "unique": ["organization"],
                      "sublists": ["credentials", "labels", "instance_groups", "notification_templates_started",
                                   "notification_templates_success", "notification_templates_error"]},
    "schedules": {"type": "schedule", "required": ["name", "rrule", "unified_job_template"],
                  "defaults": {"description": "", "enabled": True, "extra_data": {}, "inventory": None, "scm_branch": None, "job_type": None,
                               "job_tags": None, "skip_tags": None, "limit": None, "diff_mode": None, "verbosity": None, "execution_environment": None,
                               "forks": None, "job_slice_count": None, "timeout": None},
                  "fk": {"unified_job_template": "unified_job_templates", "inventory": "inventories", "execution_environment": "execution_environments"},
                  "unique": ["unified_job_template"], "sublists": ["credentials", "labels", "instance_groups"]},
    "labels": {"type": "label", "required": ["name", "organization"], "defaults": {}, "fk": {"organization": "organizations"}, "unique": ["organization"],
               "sublists": []},
    "instance_groups": {"type": "instance_group", "required": ["name"], "defaults": {}, "fk": {}, "unique": [], "sublists": []},
    "notification_templates": {"type": "notification_template", "required": ["name"], "defaults": {}, "fk": {}, "unique": [], "sublists": []},
    "users": {"type": "user", "required": ["username"], "defaults": {}, "fk": {}, "unique": None, "sublists": []},
    "teams": {"type": "team", "required": ["name"], "defaults": {}, "fk": {}, "unique": [], "sublists": []},
    # made by a launch and its dependencies, never by a POST to their list (READ_ONLY)
    "jobs": {"type": "job", "required": [], "defaults": {}, "unique": None, "sublists": ["credentials"],
             "fk": {"job_template": "job_templates", "project": "projects", "inventory": "inventories",
                    "execution_environment": "execution_environments", "project_update": "project_updates"}},
    "inventory_updates": {"type": "inventory_update", "required": [], "defaults": {}, "unique": None, "sublists": [],
                          "fk": {"inventory_source": "inventory_sources", "inventory": "inventories"}},
}
UNIFIED = ("projects", "inventory_sources", "job_templates")  # what /unified_job_templates/ lists here
READ_ONLY = ("jobs", "inventory_updates", "project_updates")
FINISHED = ("successful", "failed", "error", "canceled")
# A job field and the template's flag that lets a launch set it (JobTemplate.get_ask_mapping, awx/main/models/jobs.py)
ASK_FIELDS = {"inventory": "ask_inventory_on_launch", "limit": "ask_limit_on_launch", "job_type": "ask_job_type_on_launch",
              "job_tags": "ask_tags_on_launch", "skip_tags": "ask_skip_tags_on_launch", "diff_mode": "ask_diff_mode_on_launch",
              "verbosity": "ask_verbosity_on_launch", "scm_branch": "ask_scm_branch_on_launch", "credentials": "ask_credential_on_launch",
              "execution_environment": "ask_execution_environment_on_launch", "forks": "ask_forks_on_launch",
              "timeout": "ask_timeout_on_launch", "job_slice_count": "ask_job_slice_count_on_launch", "labels": "ask_labels_on_launch",
              "instance_groups": "ask_instance_groups_on_launch"}

# The managed credential types AWX ships (the input fields used here; AWX has more optional ones).
MANAGED_CREDENTIAL_TYPES: List[Obj] = [
    {"name": "Machine", "kind": "ssh", "namespace": "ssh", "inputs": {"fields": [
        {"id": "username", "label": "Username", "type": "string"},
        {"id": "password", "label": "Password", "type": "string", "secret": True, "ask_at_runtime": True},
        {"id": "ssh_key_data", "label": "SSH Private Key", "type": "string", "format": "ssh_private_key", "secret": True, "multiline": True},
        {"id": "ssh_public_key_data", "label": "Signed SSH Certificate", "type": "string", "multiline": True, "secret": True},
        {"id": "ssh_key_unlock", "label": "Private Key Passphrase", "type": "string", "secret": True, "ask_at_runtime": True},
        {"id": "become_method", "label": "Privilege Escalation Method", "type": "string"},
        {"id": "become_username", "label": "Privilege Escalation Username", "type": "string"},
        {"id": "become_password", "label": "Privilege Escalation Password", "type": "string", "secret": True, "ask_at_runtime": True}]}},
    {"name": "Source Control", "kind": "scm", "namespace": "scm", "inputs": {"fields": [
        {"id": "username", "label": "Username", "type": "string"},
        {"id": "password", "label": "Password", "type": "string", "secret": True},
        {"id": "ssh_key_data", "label": "SCM Private Key", "type": "string", "format": "ssh_private_key", "secret": True, "multiline": True},
        {"id": "ssh_key_unlock", "label": "Private Key Passphrase", "type": "string", "secret": True}]}},
    {"name": "Vault", "kind": "vault", "namespace": "vault", "inputs": {"fields": [
        {"id": "vault_password", "label": "Vault Password", "type": "string", "secret": True, "ask_at_runtime": True},
        {"id": "vault_id", "label": "Vault Identifier", "type": "string", "format": "vault_id"}], "required": ["vault_password"]}},
]
SURVEY_TYPES = ("text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect")
CUSTOM_CREDENTIAL_KINDS = ("cloud", "net")
_INJECTOR_REF = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*}}")


class TextBody(str):
    """A response body sent as text/plain (the job output's txt and ansi formats)."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


class ApiError(Exception):
    def __init__(self, status: int, body: Obj) -> None:
        super().__init__(json.dumps(body))
        self.status = status
        self.body = body


@dataclass
class Request:
    method: str
    path: str
    query: Dict[str, str]
    body: Any


CONNECTION_TIMEOUT_S = 30.0  # an idle keep-alive connection is dropped after this
STOP_TIMEOUT_S = 10.0  # stop() joins every thread within this


class _Server(ThreadingHTTPServer):
    """One thread per connection, each kept until it has ended and joined by FakeAWX.stop() (ThreadingMixIn joins
    only non-daemon threads, and cannot end one blocked reading a kept-alive connection). Daemon threads only so
    that a bug here cannot hold the interpreter at exit."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.live_lock = threading.Lock()
        self.connections: Dict[threading.Thread, socket.socket] = {}  # guarded by live_lock
        self.closing = False
        super().__init__(("127.0.0.1", 0), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.live_lock:
            if self.closing:
                self.shutdown_request(request)
                return
            self.connections = {t: s for t, s in self.connections.items() if t.is_alive()}
            thread = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True, name="awx-fake-conn")
            self.connections[thread] = request
            thread.start()  # under the lock: close_connections() never sees a thread it cannot join

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(CONNECTION_TIMEOUT_S)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not self.closing:  # a connection stop() shut down is no error
            super().handle_error(request, client_address)

    def close_connections(self) -> List[threading.Thread]:
        """Refuse new connections, shut the live ones down (a blocked read returns) and return their threads."""
        with self.live_lock:
            self.closing = True
            connections = list(self.connections.items())
        for _thread, sock in connections:
            with contextlib.suppress(OSError):  # closed already: its fd is -1, no other socket is touched
                sock.shutdown(socket.SHUT_RDWR)
        return [thread for thread, _sock in connections]


class FakeAWX:
    """In-memory AWX. ``playbooks``: what the fake project's checkout holds (AWX checks job templates against it).

    To run jobs: ``scm`` maps a project's git URL to what it holds (jobs.ScmSource), ``job_host`` says where and how
    jobs run (jobs.JobHost). Without them a launch still creates the job, which then fails saying what is missing."""

    def __init__(self, playbooks: Iterable[str], page_size: int = 2, username: str = "admin", password: Optional[str] = None,
                 scm: Optional[Dict[str, ScmSource]] = None, job_host: Optional[JobHost] = None) -> None:
        self.playbooks = sorted(playbooks)
        self.scm: Dict[str, ScmSource] = dict(scm or {})
        self.job_host = job_host
        self.page_size = page_size
        self.username = username
        self.password = password or secrets.token_urlsafe(12)
        self.token = secrets.token_urlsafe(24)
        self.requests: List[Request] = []
        self._tokens: Dict[int, str] = {}
        self._store: Dict[str, Dict[int, Obj]] = {name: {} for name in RESOURCES}
        self._sublists: Dict[Tuple[str, int, str], List[int]] = {}
        self._surveys: Dict[int, Obj] = {}
        self._secrets: Dict[int, Obj] = {}
        self._next_id = 1
        self._lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        # jobs: launched ids waiting for the worker (one job at a time), its wake-up, the imported inventories
        self._changed = threading.Condition(self._lock)
        self._queue: List[int] = []
        self._stopping = False
        self._worker: Optional[threading.Thread] = None
        self._inventory_data: Dict[int, Obj] = {}
        self._host_ids: Dict[Tuple[int, str], int] = {}
        self._output: Dict[Tuple[str, int], str] = {}
        self._seed()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> FakeAWX:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _handle

        self._server = _Server(Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name="awx-fake")
        self._thread.start()
        self._stopping = False
        if self.job_host is not None:
            self.job_host.allow()
        self._worker = threading.Thread(target=self._work, daemon=True, name="awx-fake-jobs")
        self._worker.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every connection and join every thread, within STOP_TIMEOUT_S; RuntimeError names a
        thread still alive then (a bug of the fake). A second call does nothing."""
        server, thread, worker = self._server, self._thread, self._worker
        self._server = self._thread = self._worker = None
        threads: List[threading.Thread] = []
        if server is not None:
            server.shutdown()  # returns once serve_forever has: no connection is accepted after
            server.server_close()
            threads = server.close_connections()
        if thread is not None:
            threads.append(thread)
        if worker is not None:  # a running job is killed, queued ones never start
            with self._changed:
                self._stopping = True
                self._changed.notify_all()
            if self.job_host is not None:
                self.job_host.kill()
            threads.append(worker)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = sorted({t.name for t in threads if t.is_alive()})
        if stuck:
            raise RuntimeError(f"awx_fake: threads {stuck} still run {STOP_TIMEOUT_S:.0f} s after stop(): fix tests/awx_fake/server.py")

    def __enter__(self) -> FakeAWX:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ----------------------------------------------------------------- inspection (for tests)
    def objects(self, resource: str) -> List[Obj]:
        with self._lock:
            return [self._render(resource, obj) for obj in self._store[resource].values()]

    def find(self, resource: str, name: str) -> Obj:
        found = [o for o in self.objects(resource) if o.get("name") == name]
        assert len(found) == 1, f"{resource} named {name!r}: {len(found)} found ({[o.get('name') for o in self.objects(resource)]})"
        return found[0]

    def survey(self, job_template_id: int) -> Obj:
        with self._lock:
            return copy.deepcopy(self._surveys.get(job_template_id, {}))

    def associated(self, resource: str, obj_id: int, sublist: str) -> List[int]:
        with self._lock:
            return list(self._sublists.get((resource, obj_id, sublist), []))

    def secret_inputs(self, credential_id: int) -> Obj:
        with self._lock:
            return copy.deepcopy(self._secrets.get(credential_id, {}))

    def snapshot(self) -> Obj:
        """Everything stored, to compare two runs."""
        with self._lock:
            return copy.deepcopy({"store": self._store, "sublists": {"/".join(map(str, k)): v for k, v in self._sublists.items()},
                                  "surveys": self._surveys, "secrets": self._secrets})

    def writes(self) -> List[Request]:
        return [r for r in self.requests if r.method in ("POST", "PATCH", "PUT", "DELETE") and not r.path.startswith("/api/v2/tokens/")]

    def wait_job(self, job_id: int, timeout: float) -> Obj:
        """The job once it has finished (successful, failed, error, canceled); AssertionError after ``timeout`` s."""
        with self._changed:
            done = self._changed.wait_for(lambda: self._store["jobs"][job_id]["status"] in FINISHED, timeout)
            job = self._render("jobs", self._store["jobs"][job_id])
        assert done, f"job {job_id} still {job['status']} after {timeout:.0f} s"
        return job

    def job_output(self, job_id: int) -> str:
        """The job's output as ``stdout/?format=txt`` gives it."""
        with self._lock:
            return strip_ansi(self._output.get(("jobs", job_id), ""))

    def imported_inventory(self, inventory_id: int) -> Obj:
        """What the last inventory update stored (variables, groups, hosts)."""
        with self._lock:
            return copy.deepcopy(self._inventory_data.get(inventory_id, {}))

    # ----------------------------------------------------------------- state
    def _seed(self) -> None:
        self._create("organizations", {"name": "Default", "description": ""}, internal=True)
        for ctype in MANAGED_CREDENTIAL_TYPES:
            self._create("credential_types", dict(ctype, managed=True, injectors={}), internal=True)
        self._create("execution_environments", {"name": "AWX EE (latest)", "image": "quay.io/ansible/awx-ee:latest", "pull": "", "managed": True},
                     internal=True)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _render(self, resource: str, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["type"] = RESOURCES[resource]["type"]
        base = f"/api/v2/{resource}/{obj['id']}/"
        out["url"] = base
        related = {sub: f"{base}{sub}/" for sub in RESOURCES[resource]["sublists"]}
        summary: Obj = {}
        for field, target in RESOURCES[resource]["fk"].items():
            ref = obj.get(field)
            if ref is not None:
                related[field] = f"/api/v2/{target}/{ref}/"
                other = self._lookup_any(target, ref)
                if other is not None:
                    summary[field] = {"id": ref, "name": other.get("name", "")}
        if resource == "job_templates":
            related["survey_spec"] = f"{base}survey_spec/"
            related["launch"] = f"{base}launch/"
            related["copy"] = f"{base}copy/"
        if resource == "projects":
            related["update"] = f"{base}update/"
            related["playbooks"] = f"{base}playbooks/"
            if obj.get("_current_update"):
                update = self._store["project_updates"].get(obj["_current_update"], {})
                summary["current_update"] = {"id": obj["_current_update"], "status": update.get("status", "successful")}
        if resource in ("jobs", "inventory_updates"):
            related["stdout"] = f"{base}stdout/"
        if resource == "inventories":
            related["script"] = f"{base}script/"
        if resource == "credentials":
            ctype = self._store["credential_types"][obj["credential_type"]]
            summary["credential_type"] = {"id": ctype["id"], "name": ctype["name"]}
            out["kind"] = ctype["namespace"] or ctype["kind"]
        out["related"] = related
        out["summary_fields"] = summary
        return {k: v for k, v in out.items() if not k.startswith("_")}

    def _lookup_any(self, resource: str, obj_id: Any) -> Optional[Obj]:
        if resource == "unified_job_templates":
            for res in UNIFIED:
                if obj_id in self._store[res]:
                    return self._store[res][obj_id]
            return None
        return self._store[resource].get(obj_id)

    def _create(self, resource: str, data: Obj, internal: bool = False) -> Obj:
        spec = RESOURCES[resource]
        obj: Obj = copy.deepcopy(spec["defaults"])
        obj.update(data)
        obj["id"] = self._new_id()
        obj["created"] = obj["modified"] = "2026-01-01T00:00:00.000000Z"
        self._null_to_blank(resource, obj)
        if not internal:
            self._validate(resource, obj, None)
        if resource == "credentials":
            obj["inputs"] = self._store_secrets(obj, None)
        self._store[resource][obj["id"]] = obj
        if resource == "projects" and obj.get("scm_type"):
            self._project_update(obj)
        return obj

    @staticmethod
    def _null_to_blank(resource: str, obj: Obj) -> None:
        """AWX's CharNullField/ChoiceNullField: null sent for a text field is stored as ''."""
        for key, default in RESOURCES[resource]["defaults"].items():
            if default == "" and obj.get(key, "") is None:
                obj[key] = ""

    def _project_update(self, project: Obj) -> None:
        update_id = self._new_id()
        revision = f"{update_id:040x}"
        self._store["project_updates"][update_id] = {"id": update_id, "name": project["name"], "project": project["id"], "status": "successful",
                                                     "failed": False, "finished": "2026-01-01T00:00:01.000000Z", "scm_revision": revision}
        project["_current_update"] = update_id
        project["scm_revision"] = revision
        project["status"] = "successful"

    def _store_secrets(self, obj: Obj, old: Optional[Obj]) -> Obj:
        """Keep secret inputs aside; the stored object holds $encrypted$ (what AWX returns)."""
        ctype = self._store["credential_types"][obj["credential_type"]]
        secret_ids = {f["id"] for f in ctype["inputs"].get("fields", []) if f.get("secret")}
        kept = dict(self._secrets.get(obj["id"], {})) if old is not None else {}
        public = {}
        for key, value in (obj.get("inputs") or {}).items():
            if key in secret_ids:
                if value != ENCRYPTED:  # $encrypted$ sent back means "keep the stored secret"
                    kept[key] = value
                public[key] = ENCRYPTED
            else:
                public[key] = value
        self._secrets[obj["id"]] = kept
        return public

    # ----------------------------------------------------------------- validation (AWX's rules the playbook meets)
    def _validate(self, resource: str, obj: Obj, old: Optional[Obj]) -> None:
        spec = RESOURCES[resource]
        errors: Dict[str, List[str]] = {}
        for field in spec["required"]:
            if obj.get(field) in (None, ""):
                errors.setdefault(field, []).append("This field is required.")
        for field, target in spec["fk"].items():
            ref = obj.get(field)
            if ref is not None and (not isinstance(ref, int) or self._lookup_any(target, ref) is None):
                errors.setdefault(field, []).append(f'Invalid pk "{ref}" - object does not exist.')
        if errors:
            raise ApiError(400, errors)
        unique = spec["unique"]
        if unique is not None and "name" in obj:
            for other in self._store[resource].values():
                if other["id"] != obj["id"] and other.get("name") == obj["name"] and all(other.get(f) == obj.get(f) for f in unique):
                    label = RESOURCES[resource]["type"].replace("_", " ").capitalize()
                    raise ApiError(400, {"__all__": [f"{label} with this Name{''.join(' and ' + f.capitalize() for f in unique)} already exists."]})
        checker = getattr(self, f"_check_{resource}", None)
        if checker is not None:
            checker(obj, old)

    def _check_projects(self, obj: Obj, old: Optional[Obj]) -> None:
        if obj.get("scm_type") not in ("", "git", "svn", "insights", "archive"):
            raise ApiError(400, {"scm_type": [f'"{obj.get("scm_type")}" is not a valid choice.']})
        if obj.get("scm_type") and not obj.get("scm_url"):
            raise ApiError(400, {"scm_url": ["SCM URL is required."]})

    def _check_execution_environments(self, obj: Obj, old: Optional[Obj]) -> None:
        if obj.get("pull") not in ("", "always", "missing", "never"):
            raise ApiError(400, {"pull": [f'"{obj.get("pull")}" is not a valid choice.']})

    def _check_credential_types(self, obj: Obj, old: Optional[Obj]) -> None:
        if obj.get("kind") not in CUSTOM_CREDENTIAL_KINDS:
            raise ApiError(400, {"kind": [f"Must be 'cloud' or 'net', not {obj.get('kind')}"]})
        fields = obj.get("inputs", {}).get("fields", [])
        ids = {f.get("id") for f in fields}
        if any(not isinstance(f, dict) or "id" not in f or "label" not in f for f in fields):
            raise ApiError(400, {"inputs": ["Every field needs an id and a label."]})
        for req in obj.get("inputs", {}).get("required", []):
            if req not in ids:
                raise ApiError(400, {"inputs": [f"required field {req!r} is not an input field"]})
        injectors = obj.get("injectors") or {}
        unknown = set(injectors) - {"file", "env", "extra_vars"}
        if unknown:
            raise ApiError(400, {"injectors": [f"Additional properties are not allowed ({sorted(unknown)} were unexpected)"]})
        file_ids = set()
        for key in injectors.get("file", {}):
            if key != "template" and not key.startswith("template."):
                raise ApiError(400, {"injectors": [f"file injector key {key!r} must be 'template' or 'template.<name>'"]})
            file_ids.add(key.partition(".")[2] or "")
        for section in ("file", "env", "extra_vars"):
            for key, value in injectors.get(section, {}).items():
                if not isinstance(value, str):
                    raise ApiError(400, {"injectors": [f"{section}.{key} must be a string"]})
                for ref in _INJECTOR_REF.findall(value):
                    if ref in ids:
                        continue
                    if ref.startswith("tower.filename") and (ref == "tower.filename" or ref.split(".", 2)[2] in file_ids):
                        continue
                    raise ApiError(400, {"injectors": [f"{section}.{key} refers to {ref!r}, which is no input field and no injected file"]})

    def _check_credentials(self, obj: Obj, old: Optional[Obj]) -> None:
        ctype = self._store["credential_types"][obj["credential_type"]]
        fields = {f["id"] for f in ctype["inputs"].get("fields", [])}
        inputs = obj.get("inputs") or {}
        extra = sorted(set(inputs) - fields)
        if extra:
            raise ApiError(400, {"inputs": [f"Additional properties are not allowed ({extra} were unexpected)"]})
        have = set(inputs) | (set(self._secrets.get(obj["id"], {})) if old is not None else set())
        missing = [f for f in ctype["inputs"].get("required", []) if f not in have]
        if missing:
            raise ApiError(400, {"inputs": {f: ["required for " + ctype["name"]] for f in missing}})

    def _check_inventory_sources(self, obj: Obj, old: Optional[Obj]) -> None:
        if self._store["inventories"][obj["inventory"]].get("kind") in ("constructed", "smart"):
            raise ApiError(400, {"inventory": {"detail": "Cannot create Inventory Source for Smart or Constructed Inventories"}})
        ref = obj.get("source_project")
        source_project = self._store["projects"].get(ref) if isinstance(ref, int) else None
        if source_project is not None and source_project.get("scm_type") == "":
            raise ApiError(400, {"source_project": ["Cannot use manual project for SCM-based inventory."]})
        if obj.get("source") == "scm":
            if obj.get("source_project") is None:
                raise ApiError(400, {"source_project": ["Project required for scm type sources."]})
            if not obj.get("source_path"):
                raise ApiError(400, {"source_path": ["Source path required for scm type sources."]})

    def _check_job_templates(self, obj: Obj, old: Optional[Obj]) -> None:
        if obj.get("inventory") is None and not obj.get("ask_inventory_on_launch"):
            raise ApiError(400, {"inventory": ["Job Templates must have an inventory or allow prompting for it."]})
        if obj.get("playbook") not in self.playbooks:
            raise ApiError(400, {"playbook": ["Playbook not found for project."]})
        if obj.get("job_type") not in ("run", "check"):
            raise ApiError(400, {"job_type": [f'"{obj.get("job_type")}" is not a valid choice.']})
        if obj.get("extra_vars"):
            try:
                json.loads(obj["extra_vars"])
            except ValueError:
                raise ApiError(400, {"extra_vars": ["Must be valid JSON or YAML."]}) from None

    def _check_schedules(self, obj: Obj, old: Optional[Obj]) -> None:
        text = obj.get("rrule", "")
        if "DTSTART" not in text or "RRULE:" not in text:
            raise ApiError(400, {"rrule": ["Valid DTSTART required in rrule. Value should start with: DTSTART:YYYYMMDDTHHMMSSZ"]})
        if "FREQ=SECONDLY" in text:
            raise ApiError(400, {"rrule": ["SECONDLY is not supported."]})
        try:
            dateutil_rrule.rrulestr(text, forceset=True)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, {"rrule": [f"rrule parsing failed validation: {exc}"]}) from None
        ujt_id = obj["unified_job_template"]
        template = self._store["job_templates"].get(ujt_id)
        if template is not None:
            allowed = set(self._surveys.get(ujt_id, {}).get("spec", []) and [q["variable"] for q in self._surveys[ujt_id]["spec"]])
            extra = obj.get("extra_data") or {}
            if extra and not template.get("ask_variables_on_launch"):
                refused = sorted(k for k in extra if not (template.get("survey_enabled") and k in allowed))
                if refused:
                    raise ApiError(400, {"extra_data": [f"Variables {', '.join(refused)} provided, but not allowed for prompting."]})
            if obj.get("limit") is not None and not template.get("ask_limit_on_launch"):
                raise ApiError(400, {"limit": ["Field is not configured to prompt on launch."]})

    def _check_survey(self, spec: Any) -> None:
        if not isinstance(spec, dict):
            raise ApiError(400, {"error": "Survey question spec must be a dict."})
        for key in ("name", "description"):
            if not isinstance(spec.get(key), str):
                raise ApiError(400, {"error": f"'{key}' missing from survey spec."})
        questions = spec.get("spec")
        if not isinstance(questions, list) or not questions:
            raise ApiError(400, {"error": "'spec' must be a non-empty list of questions."})
        seen = set()
        for idx, q in enumerate(questions):
            if not isinstance(q, dict):
                raise ApiError(400, {"error": f"Survey question {idx} is not a json object."})
            for key in ("type", "question_name", "variable", "required"):
                if key not in q:
                    raise ApiError(400, {"error": f"'{key}' missing from survey question {idx}."})
            if q["type"] not in SURVEY_TYPES:
                raise ApiError(400, {"error": f"'{q['type']}' in survey question {idx} is not one of '{', '.join(SURVEY_TYPES)}' allowed question types."})
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(q["variable"])):
                raise ApiError(400, {"error": f"'{q['variable']}' in survey question {idx} is not a valid variable name."})
            if q["variable"] in seen:
                raise ApiError(400, {"error": f"'variable' '{q['variable']}' duplicated in survey question {idx}."})
            seen.add(q["variable"])
            if not isinstance(q["required"], bool):
                raise ApiError(400, {"error": f"'required' in survey question {idx} expected to be boolean."})
            default = q.get("default", "")
            if q["type"] in ("multiplechoice", "multiselect"):
                choices = q.get("choices")
                if isinstance(choices, str):
                    choices = [c for c in choices.split("\n") if c]
                if not isinstance(choices, list) or not choices:
                    raise ApiError(400, {"error": f"Survey question {idx} of type {q['type']} must have choices."})
                if len(set(choices)) != len(choices):
                    raise ApiError(400, {"error": f"Survey question {idx}: choices must be unique."})
                wanted = default.split("\n") if isinstance(default, str) and q["type"] == "multiselect" else [default]
                for value in wanted:
                    if value not in ("", None) and value not in choices:
                        raise ApiError(400, {"error": f"Default choice must be answered from the choices listed (question {idx})."})
            if q["type"] in ("text", "textarea", "password") and default not in ("", None):
                low, high = q.get("min"), q.get("max")
                if (isinstance(low, int) and len(default) < low) or (isinstance(high, int) and len(default) > high):
                    raise ApiError(400, {"error": f"Default value of survey question {idx} is outside its min/max length."})

    # ----------------------------------------------------------------- HTTP
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if 0 < length <= MAX_BODY else b""
        status: int
        body: Any
        try:
            data: Any = json.loads(raw) if raw else None
        except ValueError:
            data = None
            status, body = 400, {"detail": "JSON parse error"}
        else:
            with self._lock:
                self.requests.append(Request(h.command, parts.path, query, data))
                try:
                    self._authenticate(h, parts.path)
                    status, body = self._route(h.command, parts.path, query, data)
                except ApiError as err:
                    status, body = err.status, err.body
        text = isinstance(body, TextBody)
        payload = b"" if body is None else body.encode() if isinstance(body, TextBody) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
        h.send_header("X-API-Product-Name", "AWX")
        h.send_header("X-API-Product-Version", AWX_VERSION)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)

    def _authenticate(self, h: BaseHTTPRequestHandler, path: str) -> None:
        auth = h.headers.get("Authorization", "")
        if path.startswith("/api/v2/tokens/"):
            expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if auth != expected:
                raise ApiError(401, {"detail": "Authentication credentials were not provided."})
            return
        if auth.startswith("Bearer ") and auth[len("Bearer "):] in {self.token, *self._tokens.values()}:
            return
        raise ApiError(401, {"detail": "Authentication credentials were not provided."})

    def _route(self, method: str, path: str, query: Dict[str, str], data: Any) -> Tuple[int, Any]:
        m = re.fullmatch(r"/api/v2/([a-z_]+)/(?:(\d+)/(?:([a-z_]+)/)?)?", path)
        if not m:
            raise ApiError(404, {"detail": "Not found."})
        resource, obj_id_s, sub = m.group(1), m.group(2), m.group(3)
        obj_id = int(obj_id_s) if obj_id_s else None
        if resource == "tokens":
            return self._tokens_view(method, obj_id)
        if resource == "ping" and method == "GET":
            return 200, {"version": AWX_VERSION, "active_node": "awx-fake"}
        if resource == "unified_job_templates" and method == "GET" and obj_id is None:
            items = [(res, o) for res in UNIFIED for o in self._store[res].values()]
            return 200, self._page(path, query, [self._render(res, o) for res, o in sorted(items, key=lambda ro: ro[1]["id"])])
        if resource not in RESOURCES:
            raise ApiError(404, {"detail": "Not found."})
        if resource in READ_ONLY and method != "GET":
            raise ApiError(405, {"detail": f'Method "{method}" not allowed.'})
        if obj_id is None:
            if method == "GET":
                return 200, self._page(path, query, [self._render(resource, o) for o in self._store[resource].values()])
            if method == "POST":
                if not isinstance(data, dict):
                    raise ApiError(400, {"detail": "A JSON object is required."})
                if resource == "credential_types" and data.get("managed"):
                    raise ApiError(400, {"managed": ["Managed credential types cannot be created."]})
                return 201, self._render(resource, self._create(resource, data))
            raise ApiError(405, {"detail": f'Method "{method}" not allowed.'})
        obj = self._store[resource].get(obj_id)
        if obj is None:
            raise ApiError(404, {"detail": "Not found."})
        if sub is None:
            return self._detail(resource, obj, method, data)
        if resource == "job_templates" and sub == "survey_spec":
            return self._survey_view(obj_id, method, data)
        if resource == "job_templates" and sub == "launch":
            return self._launch_view(obj, method, data)
        if resource in ("jobs", "inventory_updates", "project_updates") and sub == "stdout" and method == "GET":
            return self._stdout_view(resource, obj, query)
        if resource == "inventories" and sub == "script" and method == "GET":
            data_ = script_data(self._inventory_data.get(obj["id"], {"variables": {}, "groups": {}, "hosts": {}}), self._ids_of(obj["id"]))
            if query.get("hostvars") not in ("1", "true", "True"):
                data_.pop("_meta")
            elif query.get("towervars") not in ("1", "true", "True"):
                for host_vars in data_["_meta"]["hostvars"].values():
                    host_vars.pop("remote_tower_enabled")
                    host_vars.pop("remote_tower_id")
            return 200, data_
        if sub in RESOURCES[resource]["sublists"]:
            return self._sublist_view(resource, obj_id, sub, method, path, query, data)
        raise ApiError(404, {"detail": "Not found."})

    def _tokens_view(self, method: str, obj_id: Optional[int]) -> Tuple[int, Any]:
        if method == "POST" and obj_id is None:
            token_id = self._new_id()
            self._tokens[token_id] = secrets.token_urlsafe(24)
            return 201, {"id": token_id, "type": "o_auth2_access_token", "token": self._tokens[token_id], "scope": "write"}
        if method == "DELETE" and obj_id in self._tokens:
            del self._tokens[obj_id]
            return 204, None
        raise ApiError(404, {"detail": "Not found."})

    def _detail(self, resource: str, obj: Obj, method: str, data: Any) -> Tuple[int, Any]:
        if method == "GET":
            return 200, self._render(resource, obj)
        if method in ("PATCH", "PUT"):
            if not isinstance(data, dict):
                raise ApiError(400, {"detail": "A JSON object is required."})
            if obj.get("managed"):
                raise ApiError(403, {"detail": "Managed objects cannot be changed."})
            new = copy.deepcopy(obj)
            readonly = {"id", "type", "url", "related", "summary_fields", "created", "modified"}
            new.update({k: v for k, v in data.items() if k not in readonly})
            self._null_to_blank(resource, new)
            self._validate(resource, new, obj)
            if resource == "credentials":
                new["inputs"] = self._store_secrets(new, obj)
            if new != obj:
                new["modified"] = "2026-01-01T00:00:02.000000Z"
            self._store[resource][obj["id"]] = new
            return 200, self._render(resource, new)
        if method == "DELETE":
            del self._store[resource][obj["id"]]
            return 204, None
        raise ApiError(405, {"detail": f'Method "{method}" not allowed.'})

    def _survey_view(self, jt_id: int, method: str, data: Any) -> Tuple[int, Any]:
        if method == "GET":
            return 200, copy.deepcopy(self._surveys.get(jt_id, {}))
        if method == "POST":
            self._check_survey(data)
            self._surveys[jt_id] = copy.deepcopy(data)
            return 200, None
        if method == "DELETE":
            self._surveys.pop(jt_id, None)
            return 200, None
        raise ApiError(405, {"detail": f'Method "{method}" not allowed.'})

    def _sublist_view(self, resource: str, obj_id: int, sub: str, method: str, path: str, query: Dict[str, str], data: Any) -> Tuple[int, Any]:
        key = (resource, obj_id, sub)
        target = "credentials" if sub.endswith("credentials") else "notification_templates" if sub.startswith("notification_templates") else sub
        if method == "GET":
            items = [self._render(target, self._store[target][i]) for i in self._sublists.get(key, []) if i in self._store[target]]
            return 200, self._page(path, query, items)
        if method != "POST":
            raise ApiError(405, {"detail": f'Method "{method}" not allowed.'})
        if not isinstance(data, dict) or not isinstance(data.get("id"), int):
            raise ApiError(400, {"msg": "\"id\" field must be an integer."})
        current = self._sublists.setdefault(key, [])
        if data.get("disassociate"):
            if data["id"] in current:
                current.remove(data["id"])
            return 204, None
        other = self._store[target].get(data["id"])
        if other is None:
            raise ApiError(400, {"msg": f"Object with id {data['id']} not found."})
        if target == "credentials" and resource == "job_templates":
            ctype = self._store["credential_types"][other["credential_type"]]
            for cid in current:
                have = self._store["credentials"][cid]
                if have["credential_type"] == other["credential_type"] and cid != other["id"] and (
                        ctype["kind"] != "vault" or have["inputs"].get("vault_id") == other["inputs"].get("vault_id")):
                    raise ApiError(400, {"error": f"Cannot assign multiple {ctype['name']} credentials."})
        if data["id"] not in current:
            current.append(data["id"])
        return 204, None

    # ----------------------------------------------------------------- launch (AWX's rules, awx/api/views/__init__.py)
    def _launch_view(self, jt: Obj, method: str, data: Any) -> Tuple[int, Any]:
        """GET: what the launch form needs; POST: create the job (JobTemplateLaunch.post). The job template's prompts
        follow JobTemplate._accept_or_ignore_job_kwargs with 'prompts' excluded from the errors, as a manual launch
        does: a field the template does not prompt for is ignored (listed in ``ignored_fields``), the job starts
        anyway. Survey answers are validated (SurveyJobTemplateMixin._survey_element_validation) and errors refuse
        the launch."""
        survey = self._surveys.get(jt["id"], {}) if jt.get("survey_enabled") else {}
        needed = [q["variable"] for q in survey.get("spec", []) if q.get("required")]
        if method == "GET":
            return 200, {"can_start_without_user_input": not needed and jt.get("inventory") is not None, "passwords_needed_to_start": [],
                         "variables_needed_to_start": needed, "survey_enabled": bool(jt.get("survey_enabled")),
                         "credential_needed_to_start": False, "inventory_needed_to_start": jt.get("inventory") is None,
                         "job_template_data": {"name": jt["name"], "id": jt["id"], "description": jt["description"]},
                         **{ask: jt.get(ask, False) for ask in ASK_FIELDS.values()}, "ask_variables_on_launch": jt.get("ask_variables_on_launch", False)}
        if method != "POST":
            raise ApiError(405, {"detail": f'Method "{method}" not allowed.'})
        data = dict(data) if isinstance(data, dict) else {}
        errors: Dict[str, Any] = {}
        ignored: Obj = {}
        prompted: Obj = {}
        raw = data.get("extra_vars", {})
        if isinstance(raw, str):
            try:
                raw = yaml.safe_load(raw) if raw.strip() else {}
            except yaml.YAMLError as exc:
                raise ApiError(400, {"extra_vars": [f"Cannot parse as JSON or YAML: {exc}"]}) from None
        if not isinstance(raw, dict):
            raise ApiError(400, {"extra_vars": ["Must be a JSON object or YAML mapping."]})
        template_vars = self._template_vars(jt)
        accepted, rejected, var_errors = self._accept_variables(jt, survey, raw, template_vars)
        errors.update(var_errors)
        if rejected:
            ignored["extra_vars"] = rejected
        current_credentials = sorted(self._sublists.get(("job_templates", jt["id"], "credentials"), []))
        for job_field, ask in ASK_FIELDS.items():
            if job_field not in data:
                continue
            value = data[job_field]
            old = current_credentials if job_field == "credentials" else jt.get(job_field)
            if (sorted(value) if job_field == "credentials" and isinstance(value, list) else value) == old:
                continue  # the template's own value: neither accepted nor ignored
            if jt.get(ask):
                prompted[job_field] = value
            else:
                ignored[job_field] = value
        if "job_type" in prompted and prompted["job_type"] not in ("run", "check"):
            errors["job_type"] = [f'"{prompted["job_type"]}" is not a valid choice.']
        if "inventory" in prompted and prompted["inventory"] not in self._store["inventories"]:
            errors["inventory"] = [f'Invalid pk "{prompted["inventory"]}" - object does not exist.']
        if prompted.get("inventory", jt.get("inventory")) is None:
            errors["resources_needed_to_start"] = ["Job Template inventory is missing or undefined."]
        if errors:
            raise ApiError(400, errors)
        # template extra vars <- survey defaults <- launch answers (SurveyJobTemplateMixin._update_unified_job_kwargs)
        defaults = {q["variable"]: q["default"] for q in survey.get("spec", [])
                    if q.get("default") is not None and not self._survey_errors(q, {q["variable"]: q["default"]})}
        extra_vars = {**template_vars, **defaults, **accepted}
        job_id = self._new_id()
        job: Obj = {"id": job_id, "name": jt["name"], "description": jt["description"], "job_template": jt["id"], "unified_job_template": jt["id"],
                    "launch_type": "manual", "status": "pending", "failed": False, "started": None, "finished": None, "elapsed": 0.0,
                    "job_explanation": "", "result_traceback": "", "project": jt["project"], "project_update": None,
                    "inventory": prompted.get("inventory", jt["inventory"]), "playbook": jt["playbook"],
                    "execution_environment": prompted.get("execution_environment", jt.get("execution_environment")),
                    "extra_vars": json.dumps(extra_vars), "scm_revision": "", "job_args": "", "job_cwd": "", "job_env": {},
                    "created": "2026-01-01T00:00:03.000000Z", "modified": "2026-01-01T00:00:03.000000Z"}
        for job_field in ("job_type", "limit", "verbosity", "forks", "job_tags", "skip_tags", "diff_mode", "timeout", "scm_branch",
                          "become_enabled", "force_handlers", "start_at_task", "use_fact_cache", "allow_simultaneous", "job_slice_count"):
            job[job_field] = prompted.get(job_field, jt.get(job_field))
        self._store["jobs"][job_id] = job
        self._sublists[("jobs", job_id, "credentials")] = list(prompted.get("credentials", current_credentials))
        self._queue.append(job_id)
        self._changed.notify_all()
        return 201, {"job": job_id, "ignored_fields": ignored, **self._render("jobs", job)}

    def _template_vars(self, jt: Obj) -> Obj:
        text = jt.get("extra_vars") or ""
        loaded = yaml.safe_load(text) if text.strip() else {}
        return dict(loaded) if isinstance(loaded, dict) else {}

    def _accept_variables(self, jt: Obj, survey: Obj, data: Obj, template_vars: Obj) -> Tuple[Obj, Obj, Dict[str, Any]]:
        """SurveyJobTemplateMixin._accept_or_ignore_variables for a manual launch: survey answers validated, the
        other variables accepted only with ask_variables_on_launch, else ignored (those equal to the template's own
        extra vars are dropped first)."""
        extra, accepted, rejected = dict(data), {}, {}
        errors: Dict[str, Any] = {}
        if survey.get("spec"):
            survey_errors: List[str] = []
            for question in survey["spec"]:
                key = question["variable"]
                found = self._survey_errors(question, data)
                if found:
                    survey_errors += found
                    if key in extra:
                        rejected[key] = extra.pop(key)
                elif key in extra:
                    accepted[key] = extra.pop(key)
            if survey_errors:
                errors["variables_needed_to_start"] = survey_errors
        if jt.get("ask_variables_on_launch"):
            accepted.update(extra)
            extra = {}
        for key in [k for k in extra if k in template_vars and template_vars[k] == extra[k]]:
            extra.pop(key)
        rejected.update(extra)
        return accepted, rejected, errors

    @staticmethod
    def _survey_errors(q: Obj, data: Obj) -> List[str]:
        """SurveyJobTemplateMixin._survey_element_validation: AWX's own messages."""
        var, kind = q["variable"], q["type"]
        if var not in data:
            return [f"'{var}' value missing"] if q.get("required") else []
        value = data[var]

        def bound(key: str) -> Optional[int]:
            return int(q[key]) if q.get(key) not in ("", None) else None

        errors: List[str] = []
        if kind in ("text", "textarea", "password"):
            if not isinstance(value, str):
                return [f"Value {value} for '{var}' expected to be a string."]
            low, high = bound("min"), bound("max")
            if low is not None and len(value) < low:
                errors.append(f"'{var}' value {value} is too small (length is {len(value)} must be at least {low}).")
            if high is not None and len(value) > high:
                errors.append(f"'{var}' value {value} is too large (must be no more than {high}).")
        elif kind in ("integer", "float"):
            # AWX's survey validation compares type() exactly: a bool (an int subclass) is no integer there
            numeric = type(value) in ((int, float) if kind == "float" else (int,))
            if not numeric:
                return [f"Value {value} for '{var}' expected to be " + ("an integer." if kind == "integer" else "a numeric type.")]
            low, high = bound("min"), bound("max")
            if low is not None and value < low:
                errors.append(f"'{var}' value {value} is too small (must be at least {low}).")
            if high is not None and value > high:
                errors.append(f"'{var}' value {value} is too large (must be no more than {high}).")
        elif kind in ("multiplechoice", "multiselect"):
            choices = q.get("choices", [])
            if isinstance(choices, str):
                choices = [c for c in choices.splitlines() if c.strip() != ""]
            if kind == "multiselect":
                if not isinstance(value, list):
                    return [f"'{var}' value is expected to be a list."]
                errors += [f"Value {v} for '{var}' expected to be one of {choices}." for v in value if v not in choices]
            elif value not in choices:
                errors.append(f"Value {value} for '{var}' expected to be one of {choices}.")
        return errors

    def _stdout_view(self, resource: str, obj: Obj, query: Dict[str, str]) -> Tuple[int, Any]:
        """UnifiedJobStdout: ?format=txt (colours stripped), ansi (as written), json ({range, content}); txt_download and
        ansi_download as txt and ansi."""
        raw = self._output.get((resource, obj["id"]), "")
        fmt = query.get("format", "json")
        if fmt in ("txt", "txt_download"):
            return 200, TextBody(strip_ansi(raw))
        if fmt in ("ansi", "ansi_download"):
            return 200, TextBody(raw)
        if fmt == "json":
            lines = raw.count("\n")
            return 200, {"range": {"start": 0, "end": lines, "absolute_end": lines}, "content": raw}
        raise ApiError(404, {"detail": f"Not found: format {fmt!r}."})

    def _ids_of(self, inventory_id: int) -> Dict[str, int]:
        return {name: hid for (inv, name), hid in self._host_ids.items() if inv == inventory_id}

    # ----------------------------------------------------------------- running jobs (jobs.py does the work)
    def _work(self) -> None:
        """The one job worker: jobs run one at a time, in launch order (the templates do not allow simultaneous runs)."""
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._stopping or bool(self._queue), timeout=1.0)
                if self._stopping:
                    for job_id in self._queue:
                        self._finish("jobs", job_id, "canceled", explanation="The fake AWX was stopped before the job ran.")
                    self._queue.clear()
                    self._changed.notify_all()
                    return
                if not self._queue:
                    continue
                job_id = self._queue.pop(0)
                self._store["jobs"][job_id].update(status="running", started=_now())
            try:
                self._run_job(job_id)
            except JobError as exc:
                with self._changed:
                    self._finish("jobs", job_id, "failed", explanation=str(exc))
            except Exception:  # a bug of the fake, or the machine: AWX says 'error' and keeps the traceback
                with self._changed:
                    self._finish("jobs", job_id, "error", traceback_text=traceback.format_exc())

    def _finish(self, resource: str, obj_id: int, status: str, explanation: str = "", traceback_text: str = "") -> None:
        """Under self._changed."""
        obj = self._store[resource][obj_id]
        obj.update(status=status, failed=status != "successful", finished=_now())
        if explanation:
            obj["job_explanation"] = explanation
        if traceback_text:
            obj["result_traceback"] = traceback_text
        self._changed.notify_all()

    def _run_job(self, job_id: int) -> None:
        """RunJob.run: its dependencies (project update, inventory updates on launch), then the private data dir,
        the credentials, the command line and ansible-playbook in the execution environment's stand-in."""
        host = self.job_host
        with self._changed:
            job = copy.deepcopy(self._store["jobs"][job_id])
            jt = copy.deepcopy(self._store["job_templates"][job["job_template"]])
            project = copy.deepcopy(self._store["projects"][job["project"]])
            sources = [copy.deepcopy(s) for s in self._store["inventory_sources"].values()
                       if s["inventory"] == job["inventory"] and s.get("update_on_launch")]
            credentials = [(copy.deepcopy(self._store["credentials"][c]), dict(self._secrets.get(c, {})),
                            copy.deepcopy(self._store["credential_types"][self._store["credentials"][c]["credential_type"]]))
                           for c in self._sublists.get(("jobs", job_id, "credentials"), []) if c in self._store["credentials"]]
            inventory = copy.deepcopy(self._store["inventories"][job["inventory"]])
        if host is None:
            raise JobError("This fake AWX has no job_host: it records launches but cannot run jobs.")
        source = self.scm.get(project.get("scm_url", ""))
        # the project update AWX runs first (scm_update_on_launch), then the inventory updates (update_on_launch)
        if project.get("scm_update_on_launch"):
            update_id = self._dependency("project_updates", {"name": project["name"], "project": project["id"], "job_type": "check"})
            if source is None:
                self._dependency_failed("project_updates", update_id, f"no repository for scm_url {project.get('scm_url')!r} in this fake",
                                        job_id, "project_update", project["name"])
            with self._changed:
                self._finish("project_updates", update_id, "successful")
                self._store["jobs"][job_id]["project_update"] = update_id
        if source is None:
            raise JobError(f"The project's scm_url {project.get('scm_url')!r} names no repository of this fake (FakeAWX scm=...).")
        for src in sources:
            update_id = self._dependency("inventory_updates", {"name": f"{inventory['name']} - {src['name']}", "inventory_source": src["id"],
                                                               "inventory": src["inventory"], "source": src["source"],
                                                               "source_path": src.get("source_path", "")})
            src_project = self._store["projects"].get(src.get("source_project") or -1, {})
            scm = self.scm.get(src_project.get("scm_url", ""))
            try:
                if src["source"] != "scm" or scm is None:
                    raise JobError(f"inventory source {src['name']!r}: only source 'scm' with a project of this fake is reproduced")
                imported, revision, text = host.import_inventory(scm, src["source_path"], update_id)
            except JobError as exc:
                with self._changed:
                    self._output[("inventory_updates", update_id)] = str(exc)
                self._dependency_failed("inventory_updates", update_id, str(exc), job_id, "inventory_update", src["name"])
            with self._changed:
                self._inventory_data[src["inventory"]] = imported  # overwrite, overwrite_vars: the source is the truth
                for name in imported["hosts"]:
                    if (src["inventory"], name) not in self._host_ids:
                        self._host_ids[(src["inventory"], name)] = self._new_id()
                self._output[("inventory_updates", update_id)] = text
                self._store["inventory_updates"][update_id]["scm_revision"] = revision
                self._finish("inventory_updates", update_id, "successful")
        self._run_playbook(job_id, job, jt, project, source, credentials, host)

    def _dependency(self, resource: str, fields: Obj) -> int:
        with self._changed:
            obj_id = self._new_id()
            self._store[resource][obj_id] = {"id": obj_id, "status": "running", "failed": False, "launch_type": "dependency", "started": _now(),
                                             "finished": None, "job_explanation": "", "result_traceback": "", **fields}
            return obj_id

    def _dependency_failed(self, resource: str, obj_id: int, why: str, job_id: int, job_type: str, name: str) -> None:
        with self._changed:
            self._finish(resource, obj_id, "failed", explanation=why)
        raise JobError(f'Previous Task Failed: {{"job_type": "{job_type}", "job_name": "{name}", "job_id": "{obj_id}"}}')

    def _run_playbook(self, job_id: int, job: Obj, jt: Obj, project: Obj, source: ScmSource,
                      credentials: List[Tuple[Obj, Obj, Obj]], host: JobHost) -> None:
        pdd = host.new_private_data_dir(f"awx_{job_id}_")
        try:
            revision = source.checkout(pdd / "project")
            (pdd / "cp").mkdir(mode=0o700)
            runner_root = host.in_job(pdd, pdd)
            with self._changed:
                inventory = self._inventory_data.get(job["inventory"], {"variables": {}, "groups": {}, "hosts": {}})
                data = script_data(inventory, self._ids_of(job["inventory"]))
                self._store["projects"][project["id"]]["scm_revision"] = revision
            script = pdd / "inventory" / "hosts"
            script.write_text(f"#! /usr/bin/env python3\n# the inventory of job {job_id}, from the database\nprint({json.dumps(data)!r})\n")
            script.chmod(0o700)
            # extra vars: the launch's merge, then AWX's own variables (Job.awx_meta_vars) over them
            extra_vars = json.loads(job["extra_vars"])
            for prefix in ("awx", "tower"):
                extra_vars.update({f"{prefix}_job_id": job_id, f"{prefix}_job_launch_type": job.get("launch_type", "manual"),
                                   f"{prefix}_user_name": self.username, f"{prefix}_project_revision": revision,
                                   f"{prefix}_project_scm_branch": project.get("scm_branch", ""), f"{prefix}_job_template_id": jt["id"],
                                   f"{prefix}_job_template_name": jt["name"]})
            extravars = pdd / "env" / "extravars"
            extravars.write_text(dump_extra_vars(extra_vars, self._template_vars(jt)))
            extravars.chmod(0o600)
            args, cred_env = self._credential_args(job, credentials, pdd, host)
            (pdd / "env" / "cmdline").write_text(shlex.join(args))
            playbook_argv = [str(host.bin_dir / "ansible-playbook"), *args, "-i", host.in_job(pdd, script), "-e", f"@{host.in_job(pdd, extravars)}",
                             job["playbook"]]
            config = read_ansible_config(pdd / "project", ["roles_path", "collections_path"])
            env = host.base_env()
            env.update({"AWX_PRIVATE_DATA_DIR": str(pdd), "JOB_ID": str(job_id), "INVENTORY_ID": str(job["inventory"]),
                        "PROJECT_REVISION": revision, "ANSIBLE_RETRY_FILES_ENABLED": "False", "MAX_EVENT_RES": "700000",
                        "AWX_HOST": self.url if self._server is not None else "", "ANSIBLE_SSH_CONTROL_PATH_DIR": f"{runner_root}/cp",
                        "ANSIBLE_ROLES_PATH": path_setting("~/.ansible/roles:/usr/share/ansible/roles:/etc/ansible/roles", config.get("roles_path"),
                                                           "requirements_roles", runner_root),
                        "ANSIBLE_COLLECTIONS_PATH": path_setting("~/.ansible/collections:/usr/share/ansible/collections",
                                                                 config.get("collections_path"), "requirements_collections", runner_root),
                        "HOME": runner_root})
            env.update(cred_env)
            cwd = host.in_job(pdd, pdd / "project")
            with self._changed:
                self._store["jobs"][job_id].update(scm_revision=revision, job_args=json.dumps(playbook_argv), job_cwd=cwd, job_env=safe_env(env))
            timeout = float(job.get("timeout") or 0) or host.timeout_s
            rc, output, timed_out = host.run(playbook_argv, env, pdd, cwd, isolated=True, timeout_s=timeout)
            with self._changed:
                self._output[("jobs", job_id)] = output
                if timed_out:
                    self._finish("jobs", job_id, "failed", explanation="Job terminated due to timeout")
                else:
                    self._finish("jobs", job_id, "successful" if rc == 0 else "failed")
        finally:
            host.cleanup(pdd)

    def _credential_args(self, job: Obj, credentials: List[Tuple[Obj, Obj, Obj]], pdd: Path, host: JobHost) -> Tuple[List[str], Dict[str, str]]:
        """RunJob.build_args and the credential injection. Machine: -u (root when none), --become-method,
        --become-user; its SSH key is written 0600 into the private data dir and given with --private-key (ansible-runner
        loads it into ssh-agent instead). Vault: the password goes through a 0600 file (--vault-password-file, or
        --vault-id ID@file) where AWX answers ansible-playbook's prompt. Custom types: their injectors (jobs.py)."""
        args: List[str] = []
        env: Dict[str, str] = {}
        machine = next(((c, s) for c, s, t in credentials if t["kind"] == "ssh"), None)
        if job.get("job_type") == "check":
            args.append("--check")
        username = (machine[0]["inputs"].get("username") if machine else "") or "root"
        args += ["-u", username]
        if job.get("become_enabled"):
            args.append("--become")
        if job.get("diff_mode"):
            args.append("--diff")
        if machine and machine[0]["inputs"].get("become_method"):
            args += ["--become-method", machine[0]["inputs"]["become_method"]]
        if machine and machine[0]["inputs"].get("become_username"):
            args += ["--become-user", machine[0]["inputs"]["become_username"]]
        if machine and machine[1].get("ssh_key_data"):
            key = pdd / "artifacts" / str(job["id"]) / "ssh_key_data"
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_text(machine[1]["ssh_key_data"] if machine[1]["ssh_key_data"].endswith("\n") else machine[1]["ssh_key_data"] + "\n")
            key.chmod(0o600)
            args += ["--private-key", host.in_job(pdd, key)]
        for number, (cred, secret, ctype) in enumerate(credentials):
            if ctype["kind"] == "vault" and secret.get("vault_password"):
                path = pdd / "env" / f"vault-password-{number}"
                path.write_text(secret["vault_password"] + "\n")
                path.chmod(0o600)
                vault_id = cred["inputs"].get("vault_id")
                args += ["--vault-id", f"{vault_id}@{host.in_job(pdd, path)}"] if vault_id else ["--vault-password-file", host.in_job(pdd, path)]
            elif ctype["kind"] in ("cloud", "net") and not ctype.get("managed"):
                injected_env, injected_args, _files = render_injectors(ctype, {**cred["inputs"], **secret}, pdd, host)
                env.update(injected_env)
                args += injected_args
        if job.get("forks"):
            args.append(f"--forks={job['forks']}")
        if job.get("force_handlers"):
            args.append("--force-handlers")
        if job.get("limit"):
            args += ["-l", job["limit"]]
        if job.get("verbosity"):
            args.append("-" + "v" * min(5, int(job["verbosity"])))
        if job.get("job_tags"):
            args += ["-t", job["job_tags"]]
        if job.get("skip_tags"):
            args.append(f"--skip-tags={job['skip_tags']}")
        if job.get("start_at_task"):
            args.append(f"--start-at-task={job['start_at_task']}")
        return args, env

    # ----------------------------------------------------------------- list views
    def _page(self, path: str, query: Dict[str, str], items: List[Obj]) -> Obj:
        filters = {k: v for k, v in query.items() if k not in ("page", "page_size", "order_by", "search")}
        plain = {k: v for k, v in filters.items() if not k.startswith("or__")}
        alternatives = {k[len("or__"):]: v for k, v in filters.items() if k.startswith("or__")}

        def value_matches(obj: Obj, field: str, want: str) -> bool:
            have = obj.get(field)
            if isinstance(have, bool):
                return str(have).lower() == want.lower()
            return ("" if have is None else str(have)) == want

        def keep(obj: Obj) -> bool:
            if not all(value_matches(obj, f, v) for f, v in plain.items()):
                return False
            return not alternatives or any(value_matches(obj, f, v) for f, v in alternatives.items())

        matched = sorted((o for o in items if keep(o)), key=lambda o: o["id"])
        size = int(query.get("page_size", self.page_size))
        page = int(query.get("page", 1))
        if (page < 1 or (page - 1) * size > max(len(matched) - 1, 0)) and not (page == 1 and not matched):
            raise ApiError(404, {"detail": "Invalid page."})
        chunk = matched[(page - 1) * size: page * size]

        def link(number: int) -> str:
            return f"{path}?{urlencode(dict(query, page=str(number)))}"

        return {"count": len(matched), "next": link(page + 1) if page * size < len(matched) else None,
                "previous": link(page - 1) if page > 1 else None, "results": chunk}
