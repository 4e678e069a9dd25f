# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action plugin for gpu_ops.mig_serving.k8s_render: render mode of role k8s_objects, in the controller process.

Thin: the argument spec here, the logic in plugin_utils/_k8s_render.py. It runs where ansible-playbook runs, so a
relative render directory is taken from the directory ansible-playbook was started in."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import yaml
from ansible.errors import AnsibleActionFail
from ansible.parsing.yaml.dumper import AnsibleDumper
from ansible.plugins.action import ActionBase

from ansible_collections.gpu_ops.mig_serving.plugins.plugin_utils import _k8s_render as render

ARGUMENT_SPEC: Dict[str, Any] = {
    "render_dir": {"type": "str", "required": True},
    "component": {"type": "str", "required": True},
    "manifests": {"type": "list", "elements": "raw", "default": []},
    "helm_releases": {"type": "list", "elements": "raw", "default": []},
    "sensitive": {"type": "bool", "default": False},
}


def _dump(data: Any) -> str:
    # what ansible.builtin.to_nice_yaml(indent=2, sort_keys=false, width=1000) writes
    return str(yaml.dump(data, Dumper=AnsibleDumper, allow_unicode=True, default_flow_style=False, indent=2,
                         sort_keys=False, width=1000))


class ActionModule(ActionBase):  # type: ignore[misc]  # ansible-core ships no type information
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        result: Dict[str, Any] = super().run(tmp, task_vars)
        _dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        component = args["component"]
        problems = render.request_problems(component, args["manifests"], args["helm_releases"])
        if not args["render_dir"]:
            problems.append("render mode needs the output directory: -e gpu_ops_render_dir=PATH")
        if problems:
            raise AnsibleActionFail("k8s_render ({}): {}".format(component, "; ".join(problems)))
        root = os.path.realpath(os.path.expanduser(args["render_dir"]))
        check = bool(self._task.check_mode)
        sensitive = bool(args["sensitive"])
        files = render.rendered_files(args["manifests"], args["helm_releases"], _dump)
        try:
            plan, state = render.plan(root, component, files, sensitive)
            render.execute(plan, check)
            changed = plan.changed
            if files or state["root_exists"]:
                index = os.path.join(root, render.INDEX_NAME)
                content = render.index_content(render.read_text(index), component, args["helm_releases"], yaml.safe_load, _dump)
                changed = render.write_if_changed(index, content, 0o644, check) or changed
            if files or state["record_exists"]:
                record = os.path.join(root, render.RECORD_NAME)
                changed = render.write_if_changed(record, render.record_content(state["record"]), 0o644, check) or changed
        except render.RenderError as exc:
            raise AnsibleActionFail(str(exc)) from None
        except OSError as exc:
            raise AnsibleActionFail(f"Rendering {component} into {root} failed: {exc}") from None

        for path in plan.kept:
            self._display.warning(
                f"Kept {path}: a render of gpu_ops.mig_serving wrote it, this one no longer produces it, and it changed since "
                "(it is yours now; delete it if it is not needed).")
        result.update(
            changed=changed,
            directory=plan.directory,
            written=sorted(os.path.basename(p) for p, dummy, dummy in plan.writes),
            removed=sorted(os.path.basename(p) for p, dummy in plan.removes),
            kept=sorted(os.path.basename(p) for p in plan.kept),
        )
        if self._task.diff and not sensitive:
            result["diff"] = self._diffs(plan)
        return result

    @staticmethod
    def _diffs(plan: render.Plan) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        for path, content, reason in plan.writes:
            if reason != "mode":
                out.append({"before_header": path if reason == "changed" else "/dev/null", "after_header": path,
                            "before": plan.before.get(path, ""), "after": content})
        for path, old in plan.removes:
            out.append({"before_header": path, "after_header": "/dev/null", "before": old or "", "after": ""})
        return out
