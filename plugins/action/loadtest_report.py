# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action plugin for gpu_ops.mig_serving.loadtest_report: the load-test report, written in the controller process.

Thin: the argument spec here, the logic in plugin_utils/_loadtest_report.py. It runs where ansible-playbook runs, so
relative paths are taken from the directory ansible-playbook was started in."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.gpu_ops.mig_serving.plugins.plugin_utils import _loadtest_report as report

ARGUMENT_SPEC: Dict[str, Any] = {
    "run": {"type": "dict"},
    "run_file": {"type": "path"},
    "dest": {"type": "path", "required": True},
}


def _plain(data: Any) -> Any:
    """The run as plain JSON types (Ansible hands over its own str/dict subclasses and lazy templated containers)."""
    try:
        return json.loads(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise AnsibleActionFail(f"loadtest_report: run must be JSON-serialisable (it is written as run.json): {exc}") from None


class ActionModule(ActionBase):  # type: ignore[misc]  # ansible-core ships no type information
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        result: Dict[str, Any] = super().run(tmp, task_vars)
        _dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, mutually_exclusive=[("run", "run_file")],
                                                   required_one_of=[("run", "run_file")])
        dest = os.path.realpath(os.path.expanduser(args["dest"]))
        if args["run_file"] is not None:
            path = os.path.realpath(os.path.expanduser(args["run_file"]))
            try:
                with open(path, encoding="utf-8") as handle:
                    run = json.load(handle)
            except (OSError, ValueError) as exc:
                raise AnsibleActionFail(f"loadtest_report: reading the run from run_file {path}: {exc}") from None
            origin = f"run_file {path}"
        else:
            run = _plain(args["run"])
            origin = "run"
        problems = report.validate_run(run)
        if problems:
            raise AnsibleActionFail("loadtest_report: {} is not a valid load-test run ({} problem(s)):\n- {}".format(
                origin, len(problems), "\n- ".join(problems)))
        missing = report.matplotlib_problem()
        try:
            if missing:
                raise report.ReportError(missing)
            if self._task.check_mode:
                report.check_dest(dest)
                written = {"report": os.path.join(dest, "report.md"), "summary": report.summarize(run),
                           "files": [os.path.join(dest, name) for name in report.report_files(run)]}
            else:
                written = report.write_report(dest, run)
        except report.ReportError as exc:
            raise AnsibleActionFail(f"loadtest_report: {exc}") from None
        result.update(changed=True, **written)
        return result
