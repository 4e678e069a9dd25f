# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: a node's MIG devices as the hardware reports them, compared with a plan.

Not a public API; may change without notice.

Serves ``mig_verify`` on the node and the ``mig_compare`` filter on the controller, so both say the same
differences for the same GPUs. GPUs come in ``mig_info``'s shape; plans in ``_mig_plan.plan``'s.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError, MigProfile, parse_profile
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_resources import check_plan_entry
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._text import brief, is_int, text_table


def _instances(gpu: Mapping[str, Any], key: str, fields: Tuple[str, ...], where: str) -> List[Mapping[str, Any]]:
    raw = gpu.get(key) or []
    if not isinstance(raw, list):
        raise MigPlanError(f"{where}: '{key}' must be a list as mig_info returns it, not {brief(raw)}")
    for item in raw:
        if not isinstance(item, Mapping) or not all(f in item for f in fields):
            raise MigPlanError(f"{where}: '{key}' entry {brief(item)} needs {', '.join(fields)} as mig_info returns them")
    return raw


def actual_devices(gpu: Mapping[str, Any]) -> Tuple[Dict[str, int], List[str]]:
    """MIG devices present on a GPU as ``mig_info`` reports it: ``({profile: count}, problems)``.

    A MIG device is a compute instance; it is named after its GPU instance when it spans it
    (``3g.20gb``) and ``<C>c.<GI>`` otherwise. A GPU instance without compute instance is
    not a usable device and is reported as a problem. Malformed input raises MigPlanError naming the GPU.
    """
    where = f"GPU {gpu.get('index', '?')}"
    counts: Dict[str, int] = {}
    problems: List[str] = []
    gis: Dict[Any, Mapping[str, Any]] = {}
    for gi in _instances(gpu, "gpu_instances", ("id", "profile"), where):
        if not is_int(gi["id"]):
            raise MigPlanError(f"{where}: GPU instance id {brief(gi['id'])} is not an integer")
        gis[gi["id"]] = gi
    with_ci = set()
    for ci in _instances(gpu, "compute_instances", ("gpu_instance_id", "profile"), where):
        gi_id = ci["gpu_instance_id"]
        owner = gis.get(gi_id) if is_int(gi_id) else None
        if owner is None:
            problems.append(f"compute instance {ci.get('id')} belongs to unknown GPU instance {gi_id}")
            continue
        with_ci.add(gi_id)
        try:
            gi_prof = parse_profile(owner["profile"])
        except MigConfigError as exc:
            raise MigPlanError(f"{where}: GPU instance {gi_id}: {exc}") from None
        try:
            ci_prof = parse_profile(ci["profile"])
            c = ci_prof.compute
        except MigConfigError:
            c = gi_prof.gpu_slices
        dev = MigProfile(gi_prof.gpu_slices, gi_prof.memory_gb, gi_prof.attribute, 0 if c == gi_prof.gpu_slices else c)
        counts[str(dev)] = counts.get(str(dev), 0) + 1
    for gi_id, gi in sorted(gis.items()):
        if gi_id not in with_ci:
            problems.append(f"GPU instance {gi_id} ({gi['profile']}) has no compute instance")
    return dict(sorted(counts.items())), problems


def compare(expected: Sequence[Mapping[str, Any]], gpus: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Differences between a plan and the current state, one dict per (GPU, item):
    ``{gpu, profile, expected, actual}``; ``profile`` is ``mig-mode`` for the MIG mode.
    Malformed input raises MigPlanError naming the plan entry or the GPU."""
    if not isinstance(expected, list):
        raise MigPlanError(f"the plan must be the list mig_plan returns, not {brief(expected)}")
    if not isinstance(gpus, list):
        raise MigPlanError(f"the GPUs must be a list as mig_info returns them, not {brief(gpus)}")
    by_index: Dict[int, Mapping[str, Any]] = {}
    for g in gpus:
        if not isinstance(g, Mapping) or not is_int(g.get("index")):
            raise MigPlanError(f"GPU {brief(g)} must be a mapping with an integer 'index', as mig_info returns it")
        by_index[g["index"]] = g
    mismatches: List[Dict[str, Any]] = []
    for exp in expected:
        check_plan_entry(exp)
        idx = exp["index"]
        gpu = by_index.get(idx)
        if gpu is None:
            mismatches.append({"gpu": idx, "profile": "gpu", "expected": "present", "actual": "absent"})
            continue
        want_mode = "enabled" if exp["mig_enabled"] else "disabled"
        cur, pend = gpu.get("mig_mode_current"), gpu.get("mig_mode_pending")
        if cur != want_mode:
            mismatches.append({"gpu": idx, "profile": "mig-mode", "expected": want_mode, "actual": cur})
        elif pend not in (None, cur):
            mismatches.append(
                {"gpu": idx, "profile": "mig-mode", "expected": want_mode, "actual": f"{cur} (pending {pend}: reset needed)"}
            )
        have, problems = actual_devices(gpu) if cur == "enabled" else ({}, [])
        want = {str(parse_profile(p)): int(n) for p, n in exp["devices"].items() if n}
        for prof in sorted(set(want) | set(have)):
            if want.get(prof, 0) != have.get(prof, 0):
                mismatches.append({"gpu": idx, "profile": prof, "expected": want.get(prof, 0), "actual": have.get(prof, 0)})
        for problem in problems:
            mismatches.append({"gpu": idx, "profile": "instance", "expected": "complete", "actual": problem})
    return mismatches


def mismatch_table(mismatches: Sequence[Mapping[str, Any]]) -> str:
    """A small fixed-width table for error messages."""
    return text_table(
        [("GPU", "PROFILE", "EXPECTED", "ACTUAL")]
        + [(str(m["gpu"]), str(m["profile"]), str(m["expected"]), str(m["actual"])) for m in mismatches]
    )
