# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugin_utils/_k8s_render.py: the render plan, its check-mode parity and the record rules (the playbook-level
behaviour is tests/integration/test_render_dir.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml

from ansible_collections.gpu_ops.mig_serving.plugins.plugin_utils import _k8s_render as render


def dump(data: Any) -> str:
    return str(yaml.safe_dump(data, sort_keys=False))


def cm(name: str) -> Dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": name}}


def run(root: Path, files: List[Tuple[str, str]], check: bool = False, sensitive: bool = False,
        component: str = "demo") -> render.Plan:
    plan, state = render.plan(str(root), component, files, sensitive)
    render.execute(plan, check)
    if files or state["record_exists"]:
        render.write_if_changed(str(root / render.RECORD_NAME), render.record_content(state["record"]), 0o644, check)
    return plan


def snapshot(root: Path) -> Dict[str, Any]:
    return {str(p.relative_to(root)): (p.read_text(), oct(p.stat().st_mode & 0o777)) if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def test_file_names_follow_apply_order_and_releases() -> None:
    files = render.rendered_files([cm("a"), {**cm("b"), "kind": "Secret"}], [{"release": "r", "values": {"x": 1}}], dump)
    assert [n for n, dummy in files] == ["01-configmap-a.yaml", "02-secret-b.yaml", "r.values.yaml"]
    assert all(c.startswith("---\n") for dummy, c in files)


@pytest.mark.parametrize(("component", "manifests", "message"), [
    ("a/b", [], "the component must be a lower-case name"),
    ("demo", "x", "k8s_objects_manifests must be a list of objects"),
    ("demo", [{"kind": "ConfigMap"}], "object 1 needs apiVersion, kind and metadata.name"),
    ("demo", [{**cm("x"), "metadata": {"name": "../x"}}], "ConfigMap name '../x' is not an object name"),
])
def test_request_problems_name_the_input(component: str, manifests: Any, message: str) -> None:
    assert any(message in p for p in render.request_problems(component, manifests, []))


def test_check_mode_plans_what_the_real_run_does_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "out"
    run(root, [("01-configmap-a.yaml", "a\n"), ("02-configmap-b.yaml", "b\n")])
    (root / "demo" / "02-configmap-b.yaml").write_text("the user's\n")
    before = snapshot(root)
    files = [("01-configmap-a.yaml", "a2\n"), ("03-configmap-c.yaml", "c\n")]
    checked = run(root, files, check=True)
    assert snapshot(root) == before
    real = run(root, files)
    assert (checked.writes, checked.removes, checked.kept) == (real.writes, real.removes, real.kept)
    assert [os.path.basename(p) for p in real.kept] == ["02-configmap-b.yaml"]
    assert (root / "demo" / "02-configmap-b.yaml").read_text() == "the user's\n"
    assert json.loads((root / render.RECORD_NAME).read_text())["components"]["demo"] == {
        "01-configmap-a.yaml": render.sha1("a2\n"), "03-configmap-c.yaml": render.sha1("c\n")}
    assert not run(root, files).changed


def test_sensitive_files_are_private_without_digest_and_go_with_their_directory(tmp_path: Path) -> None:
    root = tmp_path / "out"
    run(root, [("01-secret-s.yaml", "token\n")], sensitive=True, component="secrets")
    assert oct((root / "secrets").stat().st_mode & 0o777) == "0o700"
    assert oct((root / "secrets" / "01-secret-s.yaml").stat().st_mode & 0o777) == "0o600"
    assert json.loads((root / render.RECORD_NAME).read_text())["components"]["secrets"] == {"01-secret-s.yaml": None}
    plan = run(root, [], sensitive=True, component="secrets")
    assert plan.remove_dir
    assert not (root / "secrets").exists()


@pytest.mark.parametrize(("record", "message"), [
    ("{not json", "cannot be read as the record"),
    ('{"version": 2, "components": {}}', "it is not version 1 of"),
    ('{"version": 1, "components": {"demo": {"../victim": null}}}', "with plain file names"),
    ('{"version": 1, "components": {"demo": {"a.yaml": "md5:12"}}}', "FILE NAME: SHA-1 or null"),
])
def test_a_bad_record_is_refused_before_anything_is_written(tmp_path: Path, record: str, message: str) -> None:
    root = tmp_path / "out"
    root.mkdir()
    (root / render.RECORD_NAME).write_text(record)
    before = snapshot(root)
    with pytest.raises(render.RenderError, match="Nothing was written or removed") as err:
        run(root, [("01-configmap-a.yaml", "a\n")])
    assert message in str(err.value)
    assert snapshot(root) == before


def test_paths_that_are_not_directories_are_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("notes\n")
    with pytest.raises(render.RenderError, match="exists and is not a directory: give the path of a directory"):
        run(tmp_path / "out", [("a.yaml", "a\n")])
    with pytest.raises(render.RenderError, match="a path through directories only"):
        run(tmp_path / "out" / "sub", [("a.yaml", "a\n")])


def test_the_index_keeps_other_components_and_replaces_this_ones() -> None:
    previous = dump({"releases": [{"release": "z", "component": "other"}, {"release": "old", "component": "demo"}]})
    mine = [{"release": "a", "namespace": "n", "repository": "r", "chart": "c", "version": "1.0.0", "values": {}}]
    out = yaml.safe_load(render.index_content(previous, "demo", mine, yaml.safe_load, dump))
    assert [(r["release"], r["component"]) for r in out["releases"]] == [("a", "demo"), ("z", "other")]
    assert out["releases"][0]["values_file"] == "demo/a.values.yaml"
