# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Docs from one source: the pages scripts/gen-docs.py generates (antsibull-docs over the plugins' DOCUMENTATION
and the roles' argument specs, and meta/shared_variables.yml) are the ones in docs/, antsibull-docs' own linter
passes, and no hand-written page keeps a second copy of what the specs say."""
from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Set

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen-docs.py"
BIN = Path(sys.executable).parent
ROLES = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(base: Path, gen: ModuleType) -> Dict[str, bytes]:
    paths = [base / f for f in gen.GENERATED_FILES] + [p for d in gen.GENERATED_DIRS for p in (base / d).rglob("*")]
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in paths if p.is_file()}


@pytest.mark.slow
def test_generated_docs_are_current(tmp_path: Path) -> None:
    gen = _gen()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dest", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fresh, committed = _tree(tmp_path, gen), _tree(ROOT / "docs", gen)
    assert fresh, "the generator wrote nothing"
    stale = sorted(f"docs/{rel}" for rel in fresh if rel in committed and fresh[rel] != committed[rel])
    missing = sorted(f"docs/{rel}" for rel in fresh if rel not in committed)
    extra = sorted(f"docs/{rel}" for rel in committed if rel not in fresh)
    assert (stale, missing, extra) == ([], [], []), (
        f"generated docs not current (stale {stale}, missing {missing}, no longer generated {extra}): "
        "run `.venv/bin/python scripts/gen-docs.py` and commit docs/"
    )


@pytest.mark.slow
def test_antsibull_docs_lint() -> None:
    # The linter copies the collection and its dependencies (kubernetes.core, ... from the venv) to a temporary tree, and
    # copies a directory inside a Git work tree with `git ls-files` (antsibull_fileutils.vcs.detect_vcs): the venv
    # lies in this checkout and is git-ignored, so the dependencies would arrive empty. The ceiling keeps Git from
    # finding this checkout from inside the venv; the collection itself (the checkout's root) is still copied from Git.
    env = dict(
        os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
        ANSIBLE_NOCOLOR="1", GIT_CEILING_DIRECTORIES=str(ROOT),
    )
    argv = [
        str(BIN / "antsibull-docs"), "lint-collection-docs", "--plugin-docs", "--output-format", "simplified-rst",
        "collections/ansible_collections/gpu_ops/mig_serving",
    ]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"


def test_every_plugin_and_role_has_a_committed_page() -> None:
    expected = _gen().expected_pages()
    assert {"roles/triton.rst", "modules/mig_info.rst", "filters/mig_plan.rst", "lookups/mig_config.rst"} <= set(expected)
    assert [p for p in expected if not (ROOT / "docs" / p).is_file()] == []


PAGES = {("role", "k8s_objects"): "roles/k8s_objects.rst", ("module", "mig_info"): "modules/mig_info.rst", ("filter", "mig_plan"): "filters/mig_plan.rst"}


@pytest.mark.parametrize(
    ("page", "text", "expected"),
    [
        # a page of ours, from a sibling and from another directory, anchors kept
        ("modules/mig_info.rst",
         "`gpu\\_ops.mig\\_serving.mig\\_plan <mig_plan_filter.rst>`__",
         "`gpu\\_ops.mig\\_serving.mig\\_plan <../filters/mig_plan.rst>`__"),
        ("reference.rst", "* `mig_info module <mig_info_module.rst>`_ -- Read", "* `mig_info module <modules/mig_info.rst>`_ -- Read"),
        ("filters/mig_plan.rst", "<a href='../../gpu_ops/mig_serving/mig_info_module.html#return-gpus'>", "<a href='../modules/mig_info.rst#return-gpus'>"),
        # another collection's page: docs.ansible.com
        (
            "modules/mig_info.rst",
            "`ansible.builtin.copy <copy_module.rst>`__",
            "`ansible.builtin.copy <https://docs.ansible.com/ansible/latest/collections/ansible/builtin/copy_module.html>`__",
        ),
        (
            "roles/k8s_objects.rst",
            "href=\"../../kubernetes/core/k8s_info_module.html\"",
            "href=\"https://docs.ansible.com/ansible/latest/collections/kubernetes/core/k8s_info_module.html\"",
        ),
    ],
)
def test_links_are_filed_under_our_layout(page: str, text: str, expected: str) -> None:
    assert _gen().rewrite_links(text, page, PAGES) == expected


def test_a_link_to_a_page_we_do_not_have_fails() -> None:
    gen = _gen()
    with pytest.raises(SystemExit, match=r"modules/mig_info.rst: link .*mig_nowhere_filter.rst.* names gpu_ops.mig_serving's filter mig_nowhere"):
        gen.rewrite_links("`gpu\\_ops.mig\\_serving.mig\\_nowhere <mig_nowhere_filter.rst>`__", "modules/mig_info.rst", {})
    with pytest.raises(SystemExit, match=r"roles/a.rst: link \.\./filters/gone.rst leads to no generated page"):
        gen.check_links({"roles/a.rst": "see `x <../filters/gone.rst>`__", "filters/mig_plan.rst": ""})


def test_shared_variables_page_lists_every_variable_with_its_default() -> None:
    source = ROOT / "meta" / "shared_variables.yml"
    if not source.is_file():
        pytest.skip("meta/shared_variables.yml not written yet")
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    page = _gen().shared_variables_page()
    assert page is not None
    rows = {line.split("|")[1].strip(" `"): line for line in page.splitlines() if line.startswith("| `")}
    assert set(rows) == set(data)
    for name, spec in data.items():
        cells = [c.strip() for c in rows[name].split("|")]
        assert cells[3] == (f"`{json.dumps(spec['default'], sort_keys=True)}`" if "default" in spec else "(none)"), rows[name]
        assert cells[2].startswith(str(spec.get("type", "raw"))), rows[name]


def _known_variables() -> Set[str]:
    """Every role variable (argument specs) and every shared collection variable."""
    shared = ROOT / "meta" / "shared_variables.yml"
    names = set(yaml.safe_load(shared.read_text(encoding="utf-8")) or {}) if shared.is_file() else set()
    for role in ROLES:
        spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
        names |= set(spec["argument_specs"]["main"]["options"])
    return names


def _hand_written() -> List[Path]:
    pages = [ROOT / "README.md", ROOT / "roles" / "README.md", *sorted((ROOT / "roles").glob("*/README.md"))]
    return pages + sorted(p for p in (ROOT / "docs").rglob("*.md") if p.relative_to(ROOT / "docs").as_posix() != "shared_variables.md")


def test_hand_written_pages_keep_no_copy_of_the_variable_tables() -> None:
    """A table row per role variable or shared variable is the generated pages' job (docs/roles/, shared_variables.md)."""
    names = _known_variables()
    offenders = []
    for page in _hand_written():
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            m = re.match(r"\|\s*`?([a-z0-9_]+)`?\s*\|", line)
            if m and m.group(1) in names:
                offenders.append(f"{page.relative_to(ROOT)}:{n}: {m.group(1)}")
    assert offenders == []


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_links_its_generated_page(role: str) -> None:
    readme = (ROOT / "roles" / role / "README.md").read_text(encoding="utf-8")
    assert f"../../docs/roles/{role}.rst" in readme


def test_hand_written_links_resolve() -> None:
    broken = []
    for page in _hand_written():
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            path = target.split("#", 1)[0]
            if not path or re.match(r"[a-z]+:", path):
                continue
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def test_architecture_names_every_module_util_and_filter() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    utils = sorted(p.name for p in (ROOT / "plugins" / "module_utils").glob("_*.py") if p.name != "__init__.py")
    filters = sorted(p.stem for p in (ROOT / "plugins" / "filter").glob("*.yml"))
    assert utils
    assert filters
    assert [u for u in utils if f"`{u}`" not in text] == [], "module_utils files docs/architecture.md does not list"
    assert [f for f in filters if f"`{f}`" not in text] == [], "filters docs/architecture.md does not list"
    assert "```mermaid" in text


def _build_ignored(rel: str, patterns: List[str]) -> bool:
    parts = rel.strip("/").split("/")
    return any(fnmatch.fnmatch("/".join(parts[: i + 1]), pat) for i in range(len(parts)) for pat in patterns)


def test_architecture_cites_only_paths_of_the_built_collection() -> None:
    patterns = [str(p) for p in yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8")).get("build_ignore", [])]
    assert _build_ignored("tests/data/bad_inputs/core.yaml", patterns)
    assert not _build_ignored("plugins/module_utils/_mig_plan.py", patterns)
    text = ARCHITECTURE.read_text(encoding="utf-8")
    cited = set(re.findall(r"`([A-Za-z0-9_.\-/]+)`", text)) | {m for m in re.findall(r"\]\(([^)#\s]+)", text) if not re.match(r"[a-z]+:", m)}
    paths = sorted(c for c in cited if "/" in c)  # bare file names are those of the table they are in
    assert paths
    bad = []
    for cited_path in paths:
        rel = os.path.normpath(os.path.join("docs", cited_path)) if not (ROOT / cited_path).exists() else cited_path
        if not (ROOT / rel).exists() or _build_ignored(rel, patterns):
            bad.append(cited_path)
    assert bad == [], "paths docs/architecture.md cites that the built collection does not contain"


# Names with a role's or the collection's prefix that are not variables: a metric, render components, tags, nginx
# upstreams.
NOT_VARIABLES = {
    "gpu_ops_mig_layout_matched", "nginx_lb_secrets", "triton_secrets", "monitoring_secrets", "monitoring_rules",
    "mig_layout_preflight", "mig_layout_install", "mig_layout_configure", "triton_http", "triton_grpc",
}


def test_hand_written_pages_name_only_variables_that_exist() -> None:
    """After a variable is renamed in a spec, no hand-written page goes on naming the old one."""
    # the collection's modules (loadtest_report, loadtest_sample) share a role's prefix and are not variables
    names = _known_variables() | {p.stem for p in (ROOT / "plugins" / "modules").glob("*.py")}
    prefixed = re.compile(r"`((?:" + "|".join(map(re.escape, ROLES)) + r"|gpu_ops)_[a-z0-9_]+)`")
    unknown = []
    for page in _hand_written():
        if page.name in ("testing.md", "benchmarks.md"):
            continue  # not generated from, nor kept with, the specs here
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        unknown += [f"{page.relative_to(ROOT)}: {n}" for n in prefixed.findall(text) if n not in names | NOT_VARIABLES]
    assert unknown == []
