# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fake AWX API itself: the rules tests/integration/test_awx.py and test_awx_jobs.py rely on, checked over HTTP, and
the pieces of its job runs (tests/awx_fake/jobs.py)."""
from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
if TYPE_CHECKING:
    from tests.awx_fake.jobs import JobHost, ScmSource, dump_extra_vars, load_inventory, script_data
    from tests.awx_fake.server import FakeAWX
else:
    from awx_fake.jobs import JobHost, ScmSource, dump_extra_vars, load_inventory, script_data
    from awx_fake.server import FakeAWX


@pytest.fixture
def awx() -> Iterator[FakeAWX]:
    with FakeAWX(playbooks={"site.yml"}, page_size=2) as server:
        yield server


def call(awx: FakeAWX, method: str, path: str, body: Any = None, auth: Optional[str] = "token") -> Tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if auth == "token":
        headers["Authorization"] = f"Bearer {awx.token}"
    elif auth is not None:
        headers["Authorization"] = auth
    url = path if path.startswith("http") else f"{awx.url}{path}"
    req = urllib.request.Request(url, method=method, headers=headers, data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def org_id(awx: FakeAWX) -> int:
    found: int = awx.find("organizations", "Default")["id"]
    return found


def test_authentication(awx: FakeAWX) -> None:
    assert call(awx, "GET", "/api/v2/projects/", auth=None)[0] == 401
    assert call(awx, "GET", "/api/v2/projects/", auth="Bearer wrong")[0] == 401
    basic = "Basic " + base64.b64encode(f"{awx.username}:{awx.password}".encode()).decode()
    status, token = call(awx, "POST", "/api/v2/tokens/", {"scope": "write"}, auth=basic)
    assert status == 201
    assert call(awx, "GET", "/api/v2/projects/", auth=f"Bearer {token['token']}")[0] == 200
    assert call(awx, "DELETE", f"/api/v2/tokens/{token['id']}/", auth=basic)[0] == 204
    assert call(awx, "GET", "/api/v2/projects/", auth=f"Bearer {token['token']}")[0] == 401


def test_pagination_filters_and_or_lookups(awx: FakeAWX) -> None:
    ids = [call(awx, "POST", "/api/v2/inventories/", {"name": f"inv{i}", "organization": org_id(awx)})[1]["id"] for i in range(5)]
    status, page = call(awx, "GET", "/api/v2/inventories/")
    assert (status, page["count"], len(page["results"]), page["previous"]) == (200, 5, 2, None)
    seen = [o["id"] for o in page["results"]]
    for _round in range(5):
        if page["next"] is None:
            break
        page = call(awx, "GET", page["next"])[1]
        seen += [o["id"] for o in page["results"]]
    assert seen == ids
    assert [o["name"] for o in call(awx, "GET", "/api/v2/inventories/?name=inv3")[1]["results"]] == ["inv3"]
    hits = call(awx, "GET", f"/api/v2/inventories/?or__id={ids[1]}&or__name=inv4")[1]
    assert sorted(o["name"] for o in hits["results"]) == ["inv1", "inv4"]
    assert call(awx, "GET", "/api/v2/inventories/?page=9")[0] == 404


def test_create_update_rules(awx: FakeAWX) -> None:
    status, inv = call(awx, "POST", "/api/v2/inventories/", {"name": "a", "organization": org_id(awx), "kind": None})
    assert (status, inv["kind"], inv["type"], inv["url"]) == (201, "", "inventory", f"/api/v2/inventories/{inv['id']}/")
    assert call(awx, "POST", "/api/v2/inventories/", {"name": "a", "organization": org_id(awx)})[1] == {
        "__all__": ["Inventory with this Name and Organization already exists."]}
    assert "organization" in call(awx, "POST", "/api/v2/inventories/", {"name": "b", "organization": 999})[1]
    status, patched = call(awx, "PATCH", inv["url"], {"description": "d", "kind": None})
    assert (status, patched["description"], patched["kind"]) == (200, "d", "")
    assert call(awx, "POST", "/api/v2/projects/", {"name": "p", "organization": org_id(awx), "scm_type": "git"})[1] == {"scm_url": ["SCM URL is required."]}


def test_surveys_are_validated(awx: FakeAWX) -> None:
    project = call(awx, "POST", "/api/v2/projects/", {"name": "p", "organization": org_id(awx), "scm_type": "git", "scm_url": "https://x/y.git"})[1]
    inv = call(awx, "POST", "/api/v2/inventories/", {"name": "i", "organization": org_id(awx)})[1]
    assert project["summary_fields"]["current_update"]["status"] == "successful"
    assert call(awx, "POST", "/api/v2/job_templates/", {"name": "t", "project": project["id"], "inventory": inv["id"], "playbook": "nope.yml"})[1] == {
        "playbook": ["Playbook not found for project."]}
    jt = call(awx, "POST", "/api/v2/job_templates/", {"name": "t", "project": project["id"], "inventory": inv["id"], "playbook": "site.yml"})[1]
    question = {"question_name": "L", "variable": "layout", "required": False, "type": "multiplechoice", "choices": ["a", "b"], "default": "c"}
    spec = {"name": "", "description": "", "spec": [question]}
    assert call(awx, "POST", jt["related"]["survey_spec"], spec)[0] == 400
    question["default"] = "b"
    assert call(awx, "POST", jt["related"]["survey_spec"], spec) == (200, None)
    assert call(awx, "GET", jt["related"]["survey_spec"]) == (200, spec)
    bad_rrule = {"name": "s", "unified_job_template": jt["id"], "rrule": "RRULE:FREQ=DAILY"}
    assert "rrule" in call(awx, "POST", "/api/v2/schedules/", bad_rrule)[1]
    extra = {"name": "s", "unified_job_template": jt["id"], "rrule": "DTSTART;TZID=UTC:20260101T030000 RRULE:FREQ=DAILY", "extra_data": {"x": 1}}
    assert call(awx, "POST", "/api/v2/schedules/", extra)[1] == {"extra_data": ["Variables x provided, but not allowed for prompting."]}


def test_credentials_keep_secrets_and_types_check_injectors(awx: FakeAWX) -> None:
    machine = awx.find("credential_types", "Machine")["id"]
    status, cred = call(awx, "POST", "/api/v2/credentials/", {"name": "c", "credential_type": machine, "inputs": {"username": "u", "ssh_key_data": "KEY"}})
    assert (status, cred["inputs"]) == (201, {"username": "u", "ssh_key_data": "$encrypted$"})
    call(awx, "PATCH", cred["url"], {"inputs": {"username": "v", "ssh_key_data": "$encrypted$"}})
    assert awx.secret_inputs(cred["id"]) == {"ssh_key_data": "KEY"}
    assert "inputs" in call(awx, "POST", "/api/v2/credentials/", {"name": "d", "credential_type": machine, "inputs": {"bogus": "x"}})[1]
    fields = {"fields": [{"id": "kubeconfig", "label": "K", "type": "string", "secret": True}]}
    bad = {"name": "k", "kind": "cloud", "inputs": fields, "injectors": {"env": {"K": "{{ kubeconfig_typo }}"}}}
    assert call(awx, "POST", "/api/v2/credential_types/", bad)[0] == 400
    good = dict(bad, injectors={"file": {"template.kubeconfig": "{{ kubeconfig }}"}, "env": {"K": "{{ tower.filename.kubeconfig }}"}})
    assert call(awx, "POST", "/api/v2/credential_types/", good)[0] == 201
    assert call(awx, "POST", "/api/v2/credential_types/", dict(good, name="k2", kind="ssh"))[0] == 400


def test_stop_joins_every_connection_thread() -> None:
    """A kept-alive connection, one whose request body never comes, one that never speaks: stop() ends them all and
    returns with no thread of the fake running (asserted at once, no sleep, no retry)."""
    awx = FakeAWX(playbooks={"site.yml"}).start()
    port = int(awx.url.rsplit(":", 1)[1])
    kept = socket.create_connection(("127.0.0.1", port), timeout=5)
    kept.sendall(b"GET /api/v2/ping/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.recv(4096).startswith(b"HTTP/1.")  # answered: its thread runs, waiting for the next request
    body = socket.create_connection(("127.0.0.1", port), timeout=5)
    body.sendall(b"POST /api/v2/organizations/ HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert "awx-fake-conn" in {t.name for t in threading.enumerate()}
    started = time.monotonic()
    try:
        awx.stop()
        assert not [t.name for t in threading.enumerate() if t.name.startswith("awx-fake")]
    finally:
        for sock in (kept, body, idle):
            sock.close()
    assert time.monotonic() - started < 5, "ended by the shut-down sockets, not by a time limit"
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    awx.stop()  # a second stop does nothing


# ------------------------------------------------------------------------------------------ launches and jobs
def template(awx: FakeAWX, survey: Optional[List[Dict[str, Any]]] = None, **fields: Any) -> Dict[str, Any]:
    project = call(awx, "POST", "/api/v2/projects/", {"name": "p", "organization": org_id(awx), "scm_type": "git", "scm_url": "https://x/y.git"})[1]
    inv = call(awx, "POST", "/api/v2/inventories/", {"name": "i", "organization": org_id(awx)})[1]
    body = {"name": "t", "project": project["id"], "inventory": inv["id"], "playbook": "site.yml", "extra_vars": '{"fixed": "x"}', **fields}
    jt: Dict[str, Any] = call(awx, "POST", "/api/v2/job_templates/", body)[1]
    if survey is not None:
        assert call(awx, "POST", jt["related"]["survey_spec"], {"name": "", "description": "", "spec": survey}) == (200, None)
        jt = call(awx, "PATCH", jt["url"], {"survey_enabled": True})[1]
    return jt


SURVEY = [
    {"question_name": "L", "variable": "layout", "required": False, "type": "multiplechoice", "choices": ["a", "b"], "default": ""},
    {"question_name": "N", "variable": "count", "required": True, "type": "integer", "min": 1, "max": 8},
    {"question_name": "T", "variable": "note", "required": False, "type": "text", "max": 4, "default": "hi"},
]


def test_survey_answers_are_checked_with_awx_messages(awx: FakeAWX) -> None:
    jt = template(awx, SURVEY)
    launch = jt["related"]["launch"]
    status, form = call(awx, "GET", launch)
    assert (status, form["variables_needed_to_start"], form["can_start_without_user_input"]) == (200, ["count"], False)
    assert call(awx, "POST", launch, {})[1] == {"variables_needed_to_start": ["'count' value missing"]}
    status, body = call(awx, "POST", launch, {"extra_vars": {"count": "2", "layout": "c", "note": "toolong"}})
    assert status == 400
    assert body["variables_needed_to_start"] == ["Value c for 'layout' expected to be one of ['a', 'b'].", "Value 2 for 'count' expected to be an integer.",
                                                 "'note' value toolong is too large (must be no more than 4)."]
    too_many = call(awx, "POST", launch, {"extra_vars": {"count": 9}})[1]
    assert too_many == {"variables_needed_to_start": ["'count' value 9 is too large (must be no more than 8)."]}
    assert awx.objects("jobs") == []


def test_a_launch_merges_defaults_and_answers_and_ignores_what_is_not_prompted(awx: FakeAWX) -> None:
    jt = template(awx, SURVEY, ask_limit_on_launch=True)
    status, body = call(awx, "POST", jt["related"]["launch"], {"extra_vars": '{"count": 3, "other": 1, "fixed": "x"}', "limit": "n1", "job_tags": "t"})
    assert status == 201
    assert body["ignored_fields"] == {"extra_vars": {"other": 1}, "job_tags": "t"}  # a template's own value is neither
    assert (body["type"], body["status"], body["limit"], body["job_tags"]) == ("job", "pending", "n1", "")
    # template extra vars <- valid survey defaults ('' is no choice: no variable) <- answers
    assert json.loads(body["extra_vars"]) == {"fixed": "x", "note": "hi", "count": 3}
    assert call(awx, "POST", "/api/v2/jobs/", {})[0] == 405
    # this fake has no job host: the job fails and says why
    job = awx.wait_job(body["job"], 10)
    assert (job["status"], job["failed"]) == ("failed", True)
    assert "has no job_host" in job["job_explanation"]
    assert call(awx, "GET", f"/api/v2/jobs/{body['job']}/")[1]["status"] == "failed"


def test_inventory_export_is_stored_as_awx_imports_it() -> None:
    exported = {"_meta": {"hostvars": {"n1": {"ansible_host": "10.0.0.1"}}},
                "all": {"children": ["ungrouped", "gpu", "ctl"], "vars": {"mode": "apply"}},
                "gpu": {"hosts": ["n1", "n2"], "vars": {"path": "{{ inventory_dir }}/x"}}, "ctl": {"hosts": ["c1"]}, "ungrouped": {"hosts": ["u1"]}}
    inv = load_inventory(exported)
    assert inv["variables"] == {"mode": "apply"}
    assert inv["groups"]["gpu"] == {"variables": {"path": "{{ inventory_dir }}/x"}, "hosts": ["n1", "n2"], "children": []}
    assert inv["hosts"] == {"n1": {"ansible_host": "10.0.0.1"}, "n2": {}, "c1": {}, "u1": {}}
    script = script_data(inv, {"n1": 7})
    assert script["all"] == {"vars": {"mode": "apply"}, "hosts": ["u1"], "children": ["ctl", "gpu"]}
    assert script["_meta"]["hostvars"]["n1"] == {"ansible_host": "10.0.0.1", "remote_tower_enabled": "true", "remote_tower_id": 7}
    assert "ungrouped" not in script


def test_extra_vars_not_set_on_the_template_are_never_templated() -> None:
    text = dump_extra_vars({"fixed": "{{ a }}", "answer": "{{ lookup('pipe', 'id') }}", "n": 2}, {"fixed": "{{ a }}"})
    assert text.splitlines() == ["fixed: '{{ a }}'", "!unsafe 'answer': !unsafe '{{ lookup(''pipe'', ''id'') }}'", "!unsafe 'n': 2"]


def test_the_checkout_holds_what_git_would_commit(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    source = ScmSource(root, changes={"inventories/dgx/hosts.yml": "all: {}\n", "README.md": None})
    revision = source.checkout(tmp_path / "project")
    assert (tmp_path / "project" / "galaxy.yml").read_bytes() == (root / "galaxy.yml").read_bytes()
    assert (tmp_path / "project" / "inventories" / "dgx" / "hosts.yml").read_text() == "all: {}\n"
    assert not (tmp_path / "project" / "README.md").exists()
    link = tmp_path / "project" / "collections" / "ansible_collections" / "gpu_ops" / "mig_serving"
    assert link.is_symlink()
    assert link.resolve() == (tmp_path / "project").resolve()
    for ignored in (".venv", "build"):  # present in the work tree, ignored by git
        assert (root / ignored).exists()
        assert not (tmp_path / "project" / ignored).exists()
    assert source.checkout(tmp_path / "again") == revision


def test_a_job_past_its_bound_is_killed(tmp_path: Path) -> None:
    host = JobHost(work_dir=tmp_path, bin_dir=tmp_path)
    started = time.monotonic()
    rc, _out, timed_out = host.run(["sh", "-c", "sleep 30 & sleep 30"], {"PATH": "/usr/bin:/bin"}, tmp_path, str(tmp_path), isolated=False, timeout_s=1)
    assert timed_out
    assert rc != 0
    assert time.monotonic() - started < 10
