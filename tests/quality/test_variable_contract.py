# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The variable contract (meta/shared_variables.yml): a role reads its own variables, the collection's shared gpu_ops_*
ones and private or registered names, never another role's; every `gpu_ops_x | default(v)` uses the listed default;
every gpu_ops_* name in use is listed and every listed one is used.

Names are found by parsing the Jinja in the role files (jinja2's own parser, as Ansible templates them): the
expressions inside YAML strings, the bare conditions (when, that, failed_when, changed_when, until), the templates,
the names looked up with lookup/query('vars', ...) and read through hostvars. YAML text (keys, comments, argument-spec
descriptions) is searched for other roles' prefixes as words, so that no role file names another role's variable."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest
import yaml
from jinja2 import Environment, meta, nodes
from jinja2.nodes import EvalContext

ROOT = Path(__file__).resolve().parents[2]
# the keys whose string values Ansible evaluates as bare Jinja expressions
CONDITIONS = {"when", "that", "failed_when", "changed_when", "until"}
# the files of a role that hold variables; README.md is prose for people, generated docs are checked elsewhere
ROLE_PARTS = ("defaults", "vars", "tasks", "handlers", "templates", "meta")
# Ansible's magic and connection variables and Jinja's globals a role may read without defining them
MAGIC = {
    "ansible_check_mode", "ansible_diff_mode", "ansible_play_hosts", "ansible_play_hosts_all", "ansible_play_batch",
    "ansible_run_tags", "ansible_skip_tags", "ansible_limit", "ansible_loop", "ansible_loop_var", "ansible_index_var",
    "ansible_parent_role_names", "ansible_role_name", "ansible_collection_name", "ansible_version", "ansible_facts",
    "ansible_host", "ansible_connection", "ansible_python_interpreter", "ansible_playbook_python", "ansible_inventory_sources",
    "ansible_config_file", "ansible_search_path", "ansible_forks", "ansible_verbosity", "ansible_user", "ansible_become",
    "groups", "group_names", "hostvars", "inventory_hostname", "inventory_hostname_short", "inventory_dir", "inventory_file",
    "playbook_dir", "role_path", "role_name", "role_names", "omit", "item", "environment",
    "lookup", "query", "q", "now", "undef", "range", "dict", "lipsum", "cycler", "joiner", "namespace",
    "true", "false", "none", "True", "False", "None",
}
MAGIC_PREFIXES = ("ansible_",)
DEFAULT_FILTERS = {"default", "d", "ansible.builtin.default"}
VARS_LOOKUPS = {"vars", "ansible.builtin.vars"}


class _AnyCallable(Dict[str, Any]):
    """Every filter and test name resolves: the names are Ansible's and the collections' (ansible.builtin.to_json,
    gpu_ops.mig_serving.input_problems ...); only the variable names matter here."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key) or (lambda *args, **kwargs: None)


_ENV = Environment(extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])
# regular expressions in Jinja string literals ('^\\S+$') decode with a DeprecationWarning, in Ansible as here
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
_ENV.filters = _AnyCallable(_ENV.filters)
_ENV.tests = _AnyCallable(_ENV.tests)


@dataclass
class Found:
    """What one file's Jinja reads: variable names, and each `gpu_ops_x | default(...)` with its argument."""

    names: Set[str] = field(default_factory=set)
    defaults: List[Tuple[str, Any]] = field(default_factory=list)  # (name, constant, or NON_CONSTANT / OMIT)


NON_CONSTANT = object()
OMIT = object()


def _root_name(node: nodes.Node) -> Optional[str]:
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        node = node.node
    return node.name if isinstance(node, nodes.Name) else None


def _default_argument(node: nodes.Filter) -> Any:
    if not node.args:
        return ""  # default() with no argument is the empty string
    arg = node.args[0]
    if isinstance(arg, nodes.Name) and arg.name == "omit":
        return OMIT
    try:
        return arg.as_const(EvalContext(_ENV))
    except nodes.Impossible:
        return NON_CONSTANT


def read_jinja(text: str, where: str, found: Found, expression: bool = False) -> None:
    source = text if not expression or "{{" in text else "{{ " + text + " }}"
    try:
        tree = _ENV.parse(source)
    except Exception as exc:  # a template Ansible could not render either
        raise AssertionError(f"{where}: cannot parse {text[:80]!r}: {exc}") from exc
    # names the template assigns itself ({% set %}, loop targets, macro arguments), also inside a branch, where jinja2
    # reports them as possibly undeclared
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    found.names |= meta.find_undeclared_variables(tree) - assigned
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Call, nodes.Filter)):
        if isinstance(node, nodes.Getattr) and _root_name(node.node) == "hostvars":
            found.names.add(node.attr)  # hostvars[host].x reads x
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name in ("lookup", "query", "q"):
            consts = [a.value for a in node.args if isinstance(a, nodes.Const) and isinstance(a.value, str)]
            if consts and consts[0] in VARS_LOOKUPS:
                found.names |= set(consts[1:])  # lookup('vars', 'x') reads x
        elif (isinstance(node, nodes.Filter) and node.name in DEFAULT_FILTERS and isinstance(node.node, nodes.Name)
              and node.node.name.startswith("gpu_ops_")):
            found.defaults.append((node.node.name, _default_argument(node)))


def read_yaml_jinja(data: Any, where: str, found: Found, key: str = "") -> None:
    if isinstance(data, dict):
        for name, value in data.items():
            read_yaml_jinja(value, where, found, str(name))
    elif isinstance(data, list):
        for value in data:
            read_yaml_jinja(value, where, found, key)
    elif isinstance(data, str) and not isinstance(data, _Unsafe):
        if key in CONDITIONS:
            read_jinja(data, where, found, expression=True)
        elif "{{" in data or "{%" in data:
            read_jinja(data, where, found)


class _Unsafe(str):
    """A `!unsafe` string: Ansible never templates it, so it reads no variable."""


class _Loader(yaml.SafeLoader):
    """YAML as Ansible loads it: `!unsafe` strings are not templated, `!vault` values are ciphertext."""


_Loader.add_constructor("!unsafe", lambda loader, node: _Unsafe(loader.construct_scalar(node)))  # type: ignore[arg-type]
_Loader.add_constructor("!vault", lambda loader, node: None)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader with two tags added


def role_files(role_dir: Path) -> Iterator[Path]:
    for part in ROLE_PARTS:
        yield from sorted(p for p in (role_dir / part).rglob("*") if p.is_file() and p.suffix in (".yml", ".yaml", ".j2"))


def defined_names(data: Any) -> Set[str]:
    """Names a task file defines for later tasks and templates: task vars, set_fact keys, register, loop_var."""
    out: Set[str] = set()
    if isinstance(data, list):
        for item in data:
            out |= defined_names(item)
    elif isinstance(data, dict):
        for key, value in data.items():
            if key in ("vars", "ansible.builtin.set_fact", "set_fact") and isinstance(value, dict):
                out |= {str(k) for k in value}
            elif key == "register" and isinstance(value, str):
                out.add(value)
            elif key == "loop_control" and isinstance(value, dict) and "loop_var" in value:
                out.add(str(value["loop_var"]))
            out |= defined_names(value)
    return out


def other_prefix_re(role: str, roles: List[str]) -> re.Pattern[str]:
    others = "|".join(map(re.escape, sorted((r for r in roles if r != role), key=len, reverse=True)))
    return re.compile(r"(?<![A-Za-z0-9_])_{0,2}(?:" + others + r")_[a-z0-9_]*[a-z0-9]")


def included_role_parameters(text: str) -> Set[str]:
    """Parameters a role passes to a role it includes (include_role ... vars: k8s_objects_x): the callee's interface."""
    callees = set(re.findall(r"name: gpu_ops\.mig_serving\.([a-z0-9_]+)", text))
    return {m for callee in callees for m in re.findall(r"^\s*(" + re.escape(callee) + r"_[a-z0-9_]+):", text, re.MULTILINE)}


def role_problems(root: Path, role: str, shared: Dict[str, Any]) -> List[str]:
    """Every breach of the contract in one role: another role's names, unlisted gpu_ops_* names, unprefixed names
    nobody defines, and `gpu_ops_x | default(v)` with another default than the listed one."""
    roles = sorted(p.name for p in (root / "roles").iterdir() if p.is_dir())
    others = other_prefix_re(role, roles)
    problems: List[str] = []
    found_by_file: Dict[str, Found] = {}
    defined: Set[str] = set()
    for path in role_files(root / "roles" / role):
        where = str(path.relative_to(root))
        text = path.read_text(encoding="utf-8")
        found = Found()
        if path.suffix == ".j2":
            read_jinja(text, where, found)
        else:
            data = load_yaml(text)
            read_yaml_jinja(data, where, found)
            defined |= defined_names(data)
            allowed = included_role_parameters(text)
            for match in others.finditer(text):
                if match.group(0) not in allowed:
                    line = text.count("\n", 0, match.start()) + 1
                    problems.append(f"{where}:{line}: names {match.group(0)}, another role's variable")
        found_by_file[where] = found
    own = (f"{role}_", f"_{role}_", f"__{role}_")
    for where, found in found_by_file.items():
        for name in sorted(found.names):
            if others.fullmatch(name):
                problems.append(f"{where}: reads {name}, another role's variable")
            elif name.startswith("gpu_ops_"):
                if name not in shared:
                    problems.append(f"{where}: reads {name}, which meta/shared_variables.yml does not list")
            elif not (name.startswith(own) or name.startswith("_") or name in defined or name in MAGIC or name.startswith(MAGIC_PREFIXES)):
                problems.append(f"{where}: reads {name}: neither {role}_*, a listed gpu_ops_* variable nor a name the role defines")
        problems += default_problems(where, found, shared, strict=True)
    return problems


def default_problems(where: str, found: Found, shared: Dict[str, Any], strict: bool) -> List[str]:
    """`gpu_ops_x | default(v)` must use the listed default; `omit` stands for an empty one. strict (roles): a
    computed default (an expression) is allowed only where the list gives none (null)."""
    problems = []
    for name, value in found.defaults:
        if name not in shared:
            continue  # reported as unlisted
        listed = shared[name].get("default")
        if value is OMIT:
            ok = listed in ("", None)
        elif value is NON_CONSTANT:
            ok = listed is None or not strict
        else:
            ok = listed is not None and value == listed and type(value) is type(listed)
        if not ok:
            shown = "omit" if value is OMIT else "an expression" if value is NON_CONSTANT else repr(value)
            problems.append(f"{where}: {name} | default({shown}), but meta/shared_variables.yml lists {listed!r}")
    return problems


def playbook_files(root: Path) -> List[Path]:
    return sorted([*(root / "playbooks").rglob("*.yml"), root / "site.yml"])


def gpu_ops_names_used(root: Path) -> Tuple[Set[str], List[str]]:
    """The gpu_ops_* names the roles and playbooks read, and the playbooks' default problems."""
    names: Set[str] = set()
    problems: List[str] = []
    for path in [*(f for r in sorted((root / "roles").iterdir()) for f in role_files(r)), *playbook_files(root)]:
        found = Found()
        where = str(path.relative_to(root))
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".j2":
            read_jinja(text, where, found)
        else:
            read_yaml_jinja(load_yaml(text), where, found)
        names |= {n for n in found.names if n.startswith("gpu_ops_")}
        if path.is_relative_to(root / "playbooks") or path.name == "site.yml":
            problems += default_problems(where, found, load_shared(root), strict=False)
    return names, problems


def load_shared(root: Path) -> Dict[str, Any]:
    data = yaml.safe_load((root / "meta" / "shared_variables.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


SHARED = load_shared(ROOT)
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
ARGUMENT_SPEC_TYPES = {"str", "int", "bool", "float", "list", "dict", "path", "raw"}


def test_the_list_is_well_formed() -> None:
    for name, entry in SHARED.items():
        assert name.startswith("gpu_ops_"), name
        assert set(entry) <= {"type", "default", "choices", "elements", "description"}, f"{name}: {set(entry)}"
        assert entry.get("type") in ARGUMENT_SPEC_TYPES, f"{name}: type {entry.get('type')!r}"
        assert isinstance(entry.get("description"), str), f"{name}: no description"
        assert len(entry["description"]) > 20, f"{name}: no description"
        assert "default" in entry, f"{name}: no default (null where there is none)"
        if "choices" in entry and entry["default"] is not None:
            defaults = entry["default"] if isinstance(entry["default"], list) else [entry["default"]]
            assert set(defaults) <= set(entry["choices"]), f"{name}: default not among the choices"


@pytest.mark.parametrize("role", ROLES)
def test_role_reads_only_its_own_and_shared_variables(role: str) -> None:
    problems = role_problems(ROOT, role, SHARED)
    assert not problems, "\n".join(problems)


def test_every_gpu_ops_name_in_use_is_listed_and_playbook_defaults_agree() -> None:
    names, problems = gpu_ops_names_used(ROOT)
    assert sorted(names - set(SHARED)) == [], "gpu_ops_* variables used but not in meta/shared_variables.yml"
    assert not problems, "\n".join(problems)


def unused(root: Path, shared: Dict[str, Any]) -> List[str]:
    """The listed variables no role, playbook or plugin names."""
    files = [p for top in ("roles", "playbooks", "plugins") for p in (root / top).rglob("*")
             if p.is_file() and p.suffix in (".yml", ".yaml", ".j2", ".py")]
    text = "\n".join(p.read_text(encoding="utf-8") for p in [*files, root / "site.yml"] if p.is_file())
    return [name for name in shared if not re.search(r"\b" + re.escape(name) + r"\b", text)]


def test_every_listed_variable_is_used() -> None:
    assert unused(ROOT, SHARED) == [], "listed in meta/shared_variables.yml but used nowhere"


# --- the checks catch what they are for: a planted violation in a copy of a small role tree ----------------------


def plant(tmp_path: Path, defaults: str, tasks: str = "---\n- name: Nothing\n  ansible.builtin.debug:\n    msg: hi\n") -> Path:
    for role in ("alpha", "beta"):
        for part in ("defaults", "tasks"):
            (tmp_path / "roles" / role / part).mkdir(parents=True)
        (tmp_path / "roles" / role / "tasks" / "main.yml").write_text("---\n- name: Nothing\n  ansible.builtin.debug:\n    msg: hi\n")
        (tmp_path / "roles" / role / "defaults" / "main.yml").write_text(f"---\n{role}_x: 1\n")
    (tmp_path / "roles" / "alpha" / "defaults" / "main.yml").write_text(defaults)
    (tmp_path / "roles" / "alpha" / "tasks" / "main.yml").write_text(tasks)
    return tmp_path


SHARED_SAMPLE = {"gpu_ops_metric_name": {"type": "str", "default": "avg_time_queue_us", "description": "x" * 30}}


@pytest.mark.parametrize(("defaults", "tasks", "expected"), [
    ("---\nalpha_y: \"{{ beta_x | default(1) }}\"\n", None, "reads beta_x, another role's variable"),
    ("---\n# alpha_y follows beta_x\nalpha_y: 2\n", None, "names beta_x, another role's variable"),
    ("---\nalpha_y: \"{{ __beta_facts }}\"\n", None, "reads __beta_facts, another role's variable"),
    ("---\nalpha_y: \"{{ gpu_ops_metric_name | default('queue') }}\"\n", None,
     "gpu_ops_metric_name | default('queue'), but meta/shared_variables.yml lists 'avg_time_queue_us'"),
    ("---\nalpha_y: \"{{ gpu_ops_undocumented | default(1) }}\"\n", None, "reads gpu_ops_undocumented, which meta/shared_variables.yml does not list"),
    ("---\nalpha_y: \"{{ mig_backend | default('auto') }}\"\n", None, "reads mig_backend: neither alpha_*"),
    ("---\nalpha_y: 1\n", "---\n- name: Check\n  ansible.builtin.assert:\n    that: hostvars[item].beta_x is defined\n  loop: [a]\n",
     "reads beta_x, another role's variable"),
    ("---\nalpha_y: 1\n", "---\n- name: Read\n  ansible.builtin.debug:\n    msg: \"{{ lookup('ansible.builtin.vars', 'beta_x') }}\"\n",
     "reads beta_x, another role's variable"),
])
def test_a_planted_violation_is_reported(tmp_path: Path, defaults: str, tasks: Optional[str], expected: str) -> None:
    root = plant(tmp_path, defaults, tasks) if tasks else plant(tmp_path, defaults)
    problems = role_problems(root, "alpha", SHARED_SAMPLE)
    assert any(expected in p for p in problems), problems


def test_a_clean_role_passes(tmp_path: Path) -> None:
    defaults = "---\nalpha_y: \"{{ gpu_ops_metric_name | default('avg_time_queue_us') }}\"\n"
    tasks = ("---\n- name: Include\n  ansible.builtin.include_role:\n    name: gpu_ops.mig_serving.beta\n  vars:\n"
             "    beta_x: \"{{ alpha_y }}\"\n    __alpha_z: \"{{ item }}\"\n  when: not (__gpu_ops_validated | default(false))\n")
    root = plant(tmp_path, defaults, tasks)
    assert role_problems(root, "alpha", SHARED_SAMPLE) == []


def test_a_listed_variable_used_nowhere_is_reported(tmp_path: Path) -> None:
    """The 'used' check on a copy: an entry no role, playbook or plugin names."""
    root = plant(tmp_path, "---\nalpha_y: \"{{ gpu_ops_metric_name | default('avg_time_queue_us') }}\"\n")
    listed = {**SHARED_SAMPLE, "gpu_ops_forgotten": {"type": "str", "default": "", "description": "y" * 30}}
    assert unused(root, listed) == ["gpu_ops_forgotten"]
