# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fake AWX API itself: the rules tests/integration/test_awx.py relies on, checked over HTTP."""
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
from typing import TYPE_CHECKING, Any, Iterator, Optional, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
if TYPE_CHECKING:
    from tests.awx_fake.server import FakeAWX
else:
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
