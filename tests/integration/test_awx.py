# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/awx_configure.yml, run for real (the awx.awx modules, unchanged) against a fake AWX API.

awx.awx 24.6.1 comes from the ``ansible`` 13.4.0 wheel on PyPI, installed under build/ for the tests only
(tests/awx_fake/collection.py); the API is tests/awx_fake/server.py (test equipment: AWX's wire formats,
pagination, lookups and validation rules the modules rely on). Secrets reach the playbook from an
ansible-vault encrypted file, as in production.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
if TYPE_CHECKING:
    from tests.awx_fake import FakeAWX, ensure_awx_collection
    from tests.awx_fake.configure import SCM_URL, SECRETS, Harness, checkout_playbooks
else:
    from awx_fake import FakeAWX, ensure_awx_collection
    from awx_fake.configure import SCM_URL, SECRETS, Harness, checkout_playbooks

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = yaml.safe_load((ROOT / "playbooks" / "awx" / "defaults.yml").read_text())
TEMPLATES: List[Dict[str, Any]] = DEFAULTS["awx_configure_job_templates"]
LAYOUTS = ROOT / "inventories" / "layouts" / "dgx.yaml"
PREFIX = DEFAULTS["awx_configure_name_prefix"]

pytestmark = pytest.mark.slow


def planned_missing() -> set[str]:
    return {t["playbook"] for t in TEMPLATES} - checkout_playbooks()


@pytest.fixture(scope="module")
def collections() -> Path:
    return ensure_awx_collection(ROOT / "build")


@pytest.fixture(scope="module")
def configured(collections: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    """First run, second run and a check-mode run against one fake AWX."""
    with FakeAWX(playbooks=checkout_playbooks() | planned_missing(), page_size=2) as awx:
        h = Harness(tmp_path_factory.mktemp("awx"), collections, awx)
        first = h.run()
        assert first.proc.returncode == 0, first.output[-6000:]
        second = h.run()
        assert second.proc.returncode == 0, second.output[-6000:]
        check = h.run("--check", "--diff")
        assert check.proc.returncode == 0, check.output[-6000:]
        yield {"awx": awx, "harness": h, "first": first, "second": second, "check": check}


def jt(awx: FakeAWX, key: str) -> Dict[str, Any]:
    entry = next(t for t in TEMPLATES if t["key"] == key)
    found: Dict[str, Any] = awx.find("job_templates", f"{PREFIX} {entry['name']}")
    return found


def test_first_run_creates_and_second_run_changes_nothing(configured: Dict[str, Any]) -> None:
    first, second, check = configured["first"], configured["second"], configured["check"]
    # 11 tasks changed: EE, project, credential type, 3 credentials, inventory, source, templates, callback key, schedule
    assert first.recap_changed() == 11, first.proc.stdout[-3000:]
    assert first.proc.stdout.count("changed: [localhost]") == 10 + len(TEMPLATES)
    assert first.writes > 0
    assert second.recap_changed() == 0, second.proc.stdout[-3000:]
    assert check.recap_changed() == 0, check.proc.stdout[-3000:]
    # nothing stored changed and nothing was even sent (the inventory's kind is given as '', see the playbook)
    assert second.writes == 0
    assert second.snapshot == first.snapshot
    assert check.snapshot == first.snapshot
    assert check.writes == 0


def test_secrets_come_from_the_vault_and_never_show(configured: Dict[str, Any]) -> None:
    awx: FakeAWX = configured["awx"]
    machine = awx.find("credentials", f"{PREFIX} GPU nodes SSH")
    assert machine["inputs"]["ssh_key_data"] == "$encrypted$"
    assert awx.secret_inputs(machine["id"])["ssh_key_data"] == SECRETS["vault_awx_configure_ssh_private_key"]
    assert machine["inputs"]["username"] == DEFAULTS["awx_configure_ssh_username"]
    vault = awx.find("credentials", f"{PREFIX} vault")
    assert awx.secret_inputs(vault["id"]) == {"vault_password": SECRETS["vault_awx_configure_vault_password"]}
    kube = awx.find("credentials", f"{PREFIX} kubeconfig")
    assert awx.secret_inputs(kube["id"]) == {"kubeconfig": SECRETS["vault_awx_configure_kubeconfig"]}
    assert jt(awx, "mig_reapply")["host_config_key"] == SECRETS["vault_awx_configure_callback_key"]
    for run in ("first", "second", "check"):
        out = configured[run].output
        for name, value in SECRETS.items():
            for fragment in value.splitlines():
                if len(fragment) > 12:
                    assert fragment not in out, f"{name} leaked in the {run} run's output"
        assert configured["awx"].token not in out


def test_kubeconfig_credential_type_injects_a_file_and_the_environment(configured: Dict[str, Any]) -> None:
    awx: FakeAWX = configured["awx"]
    ctype = awx.find("credential_types", f"{PREFIX} kubeconfig")
    assert ctype["kind"] == "cloud"
    assert ctype["managed"] is False
    # AWX's own Jinja reached AWX untouched (Ansible did not template it)
    assert ctype["injectors"] == {"file": {"template.kubeconfig": "{{ kubeconfig }}"}, "env": {"K8S_AUTH_KUBECONFIG": "{{ tower.filename.kubeconfig }}"}}
    (field,) = ctype["inputs"]["fields"]
    assert (field["id"], field["secret"], field["multiline"]) == ("kubeconfig", True, True)
    assert ctype["inputs"]["required"] == ["kubeconfig"]
    assert awx.find("credentials", f"{PREFIX} kubeconfig")["credential_type"] == ctype["id"]


def test_project_inventory_and_execution_environment(configured: Dict[str, Any]) -> None:
    awx: FakeAWX = configured["awx"]
    org = awx.find("organizations", "Default")
    ee = awx.find("execution_environments", f"{PREFIX} mig_serving EE")
    assert (ee["image"], ee["pull"], ee["organization"]) == ("registry.example.org/gpu-ops/mig-serving-ee:0.1.0", "missing", org["id"])
    project = awx.find("projects", f"{PREFIX} mig_serving")
    assert (project["scm_type"], project["scm_url"], project["scm_branch"]) == ("git", SCM_URL, "main")
    assert (project["organization"], project["default_environment"], project["scm_update_on_launch"]) == (org["id"], ee["id"], True)
    inventory = awx.find("inventories", f"{PREFIX} dgx")
    source = awx.find("inventory_sources", f"{PREFIX} dgx from the project")
    assert (source["inventory"], source["source"], source["source_project"]) == (inventory["id"], "scm", project["id"])
    assert source["source_path"] == "inventories/dgx"
    assert (source["overwrite"], source["overwrite_vars"], source["update_on_launch"]) == (True, True, True)
    assert (ROOT / source["source_path"] / "hosts.yml").is_file()


def test_job_templates(configured: Dict[str, Any]) -> None:
    awx: FakeAWX = configured["awx"]
    project = awx.find("projects", f"{PREFIX} mig_serving")
    creds = {awx.find("credentials", f"{PREFIX} {n}")["id"] for n in ("GPU nodes SSH", "vault", "kubeconfig")}
    names = sorted(o["name"] for o in awx.objects("job_templates"))
    assert names == sorted(f"{PREFIX} {t['name']}" for t in TEMPLATES)
    assert {t["key"] for t in TEMPLATES} == {"site", "mig_apply", "mig_reapply", "serving", "load_balancer", "verify", "loadtest"}
    for entry in TEMPLATES:
        obj = jt(awx, entry["key"])
        assert obj["playbook"] == entry["playbook"]
        assert (obj["project"], obj["inventory"]) == (project["id"], awx.find("inventories", f"{PREFIX} dgx")["id"])
        assert obj["execution_environment"] == awx.find("execution_environments", f"{PREFIX} mig_serving EE")["id"]
        assert set(awx.associated("job_templates", obj["id"], "credentials")) == creds
        assert obj["allow_simultaneous"] is False, "two MIG rollouts must never run at once"
        assert obj["ask_limit_on_launch"] is entry["ask_limit"]
        assert json.loads(obj["extra_vars"]) == {"mig_layout_config_file": "/runner/project/inventories/layouts/dgx.yaml"}
        assert (ROOT / json.loads(obj["extra_vars"])["mig_layout_config_file"].removeprefix("/runner/project/")).is_file()
        assert obj["survey_enabled"] is bool(entry["surveys"])
    assert jt(awx, "verify")["ask_job_type_on_launch"] is False
    # the load test runs a Job and writes a report: no check-mode run to offer
    assert jt(awx, "loadtest")["ask_job_type_on_launch"] is False
    assert jt(awx, "site")["ask_tags_on_launch"] is True
    # the node limit: AWX's Limit prompt on the MIG templates only (elsewhere it would drop k8s_control)
    assert {t["key"] for t in TEMPLATES if jt(awx, t["key"])["ask_limit_on_launch"]} == {"mig_apply", "mig_reapply"}


def test_surveys_offer_the_layouts_files_config_names(configured: Dict[str, Any]) -> None:
    awx: FakeAWX = configured["awx"]
    names = list(yaml.safe_load(LAYOUTS.read_text())["mig-configs"])
    survey = awx.survey(jt(awx, "mig_apply")["id"])
    question, rollout = survey["spec"]
    assert (question["variable"], question["type"], question["required"], question["default"]) == ("mig_layout_config", "multiplechoice", False, "")
    assert question["choices"] == names
    # the batch size can only be an extra variable (Ansible sizes batches before it reads the inventory)
    assert (rollout["variable"], rollout["type"], rollout["min"], rollout["max"], rollout["default"]) == ("gpu_ops_mig_serial", "integer", 1, 1000, 1)
    assert awx.survey(jt(awx, "mig_reapply")["id"])["spec"] == [rollout]
    for key in ("site", "serving", "load_balancer", "verify", "loadtest"):
        assert awx.survey(jt(awx, key)["id"]) == {}, key


def test_schedule_example(configured: Dict[str, Any]) -> None:
    awx: FakeAWX = configured["awx"]
    schedule = awx.find("schedules", f"{PREFIX} daily verify")
    assert schedule["unified_job_template"] == jt(awx, "verify")["id"]
    assert schedule["rrule"] == DEFAULTS["awx_configure_schedule_rrule"]
    assert schedule["enabled"] is True


def test_a_new_layout_in_the_file_reaches_the_survey(configured: Dict[str, Any]) -> None:
    """The choices are read when the playbook runs: add a config to the file and re-run."""
    h: Harness = configured["harness"]
    layouts = yaml.safe_load(LAYOUTS.read_text())
    layouts["mig-configs"]["all-3g.20gb"] = [{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.20gb": 2}}]
    changed = h.tmp / "layouts-plus-one.yaml"
    changed.write_text(yaml.safe_dump(layouts, sort_keys=False))
    run = h.run("-e", f"awx_configure_layouts_file={changed}")
    assert run.proc.returncode == 0, run.output[-4000:]
    assert run.recap_changed() == 1, run.proc.stdout[-3000:]  # the job templates task (one survey)
    survey = h.awx.survey(jt(h.awx, "mig_apply")["id"])
    assert survey["spec"][0]["choices"] == [*yaml.safe_load(LAYOUTS.read_text())["mig-configs"], "all-3g.20gb"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-e", "awx_configure_scm_url="], "awx_configure_scm_url"),
        (["-e", "vault_awx_configure_vault_password="], "awx_configure_vault_password is empty or undefined"),
        (["-e", "awx_configure_kubeconfig={{ vault_defined_nowhere }}"], "awx_configure_kubeconfig is empty or undefined"),
        (["-e", "awx_configure_layouts_file=" + str(ROOT / "galaxy.yml")], "awx_configure_layouts_file"),
    ],
)
def test_bad_settings_fail_before_touching_awx(collections: Path, tmp_path: Path, extra: List[str], message: str) -> None:
    with FakeAWX(playbooks=checkout_playbooks()) as awx:
        run = Harness(tmp_path, collections, awx).run(*extra)
        assert run.proc.returncode != 0
        assert message in run.output
        assert awx.requests == [], "nothing may reach AWX before the settings are checked"


def test_wrong_token_fails_with_the_api_message(collections: Path, tmp_path: Path) -> None:
    with FakeAWX(playbooks=checkout_playbooks()) as awx:
        run = Harness(tmp_path, collections, awx).run(token="not-the-token")
        assert run.proc.returncode != 0
        assert "Invalid authentication credentials" in run.output
        assert awx.writes() == []


@pytest.mark.parametrize("entry", [t for t in TEMPLATES if t["surveys"]], ids=lambda t: t["key"])
def test_survey_variables_are_used_by_their_playbook(entry: Dict[str, Any]) -> None:
    """A survey answer nobody reads would be silently ignored: the playbook, or a role it runs, must use it."""
    path = ROOT / entry["playbook"]
    if not path.is_file():
        pytest.skip(f"{entry['playbook']} is not in this checkout yet")
    text = path.read_text()
    roles = set(re.findall(r"gpu_ops\.mig_serving\.(\w+)", text))
    assert roles or "tasks:" in text, f"{entry['playbook']} runs neither tasks nor roles of the collection"
    for role in sorted(roles):
        text += "".join(p.read_text() for p in sorted((ROOT / "roles" / role).rglob("*.yml")))
    variables = {"layout": "mig_layout_config", "rollout": "gpu_ops_mig_serial"}
    for survey in entry["surveys"]:
        assert re.search(rf"\b{variables[survey]}\b", text), f"{entry['playbook']} does not use {variables[survey]} (survey '{survey}')"
