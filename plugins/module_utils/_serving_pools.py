# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: the serving pools, one Triton Deployment per MIG profile, planned on the fleet model.

Not a public API; may change without notice.

``plan_pools`` turns the shared variable ``gpu_ops_serving_pools`` (empty: a pool for every MIG profile the layouts
provide) and the fleet (``_mig_fleet.plan_fleet``) into the collection's fact ``gpu_ops_pools``, computed once per run
by ``playbooks/validate.yml`` with the ``serving_pools`` filter. Roles triton (Deployment, PDB, headless Service per
pool), autoscaling (HPA or ScaledObject per pool), nginx_lb (one weighted upstream server per pool), monitoring and
the verify and load-test stages read it and compute none of it again.

A pool (JSON-able)::

    name:                 <base>-<profile as a DNS label>, or the one given (Deployment, HPA, PDB)
    headless:             <name>-headless (the load balancer's Service of the pool)
    profile, resource:    the MIG profile and its extended resource (the fleet's)
    slices:               the profile's compute slices
    weight:               the load balancer's weight of each pod of the pool (default: slices)
    capacity:             the profile's devices across the GPU nodes
    max_replicas:         given, else capacity (pools sharing a profile must give theirs, and may not exceed it together)
    min_replicas, replicas, target_queue_time_us, resources: given, else None (the role's own default applies)
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._text import brief, is_int

VARIABLE = "gpu_ops_serving_pools"
KEYS = ("profile", "name", "min_replicas", "max_replicas", "replicas", "target_queue_time_us", "resources", "weight")
# A Service name is an RFC 1035 label (apimachinery IsDNS1035Label); the pool's "<name>-headless" must stay within 63.
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
NAME_MAX = 63 - len("-headless")
_RESOURCE_KEYS = ("requests", "limits")


class PoolError(ValueError):
    """Every problem of the pools, in one message."""


def profile_slug(profile: str) -> str:
    """The profile as a DNS label part: 1g.10gb+me -> 1g-10gb-me, 1c.3g.20gb -> 1c-3g-20gb."""
    return re.sub(r"[^a-z0-9]+", "-", profile.lower()).strip("-")


def _int(value: Any, where: str, low: int, problems: List[str], high: Optional[int] = None) -> Optional[int]:
    """An integer (or digits, as extra vars give them) within [low, high], else a problem and None."""
    number = int(value) if isinstance(value, str) and value.strip().isdigit() else value
    if not is_int(number) or number < low or (high is not None and number > high):
        span = f"{low}..{high}" if high is not None else f"at least {low}"
        problems.append(f"{where} must be an integer, {span}, not {brief(value)}")
        return None
    return int(number)


def _resources(value: Any, where: str, problems: List[str]) -> Optional[Dict[str, Any]]:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value or set(value) - set(_RESOURCE_KEYS) \
            or not all(isinstance(v, Mapping) for v in value.values()):
        problems.append(f"{where} must be a mapping with requests and/or limits (each a mapping such as {{cpu: \"2\", memory: 8Gi}}), "
                        f"not {brief(value)}")
        return None
    return {key: dict(value[key]) for key in _RESOURCE_KEYS if key in value}


def _entry(raw: Any, index: int, problems: List[str]) -> Optional[Dict[str, Any]]:
    where = f"{VARIABLE}[{index}]"
    if isinstance(raw, str):
        raw = {"profile": raw}
    if not isinstance(raw, Mapping):
        problems.append(f"{where} must be a MIG profile or a mapping with profile (and name, min_replicas, max_replicas, replicas, "
                        f"target_queue_time_us, resources, weight), not {brief(raw)}")
        return None
    unknown = sorted(str(k) for k in raw if k not in KEYS)
    if unknown:
        problems.append(f"{where} has unknown keys {', '.join(unknown)}; a pool takes {', '.join(KEYS)}")
    profile = raw.get("profile")
    if not isinstance(profile, str) or not profile:
        problems.append(f"{where}.profile must name a MIG profile (such as 1g.5gb), not {brief(profile)}")
        return None
    count = len(problems)
    entry: Dict[str, Any] = {"profile": profile, "name": raw.get("name")}
    for key, low in (("min_replicas", 1), ("max_replicas", 1), ("replicas", 1), ("target_queue_time_us", 1), ("weight", 1)):
        entry[key] = None if raw.get(key) is None else _int(raw[key], f"{where}.{key}", low, problems)
    entry["resources"] = _resources(raw.get("resources"), f"{where}.resources", problems)
    name = entry["name"]
    if name is not None and (not isinstance(name, str) or len(name) > NAME_MAX or not _DNS1035.match(name)):
        problems.append(f"{where}.name must be a DNS label of at most {NAME_MAX} characters (lower case letters, digits and '-', "
                        f"starting with a letter; the pool's Service is <name>-headless), not {brief(name)}")
    return entry if len(problems) == count else None


def plan_pools(fleet: Any, pools: Any = None, base: Any = "triton") -> List[Dict[str, Any]]:
    """The pools (see the module's docstring) of ``pools`` (``gpu_ops_serving_pools``: a list of profiles or mappings;
    empty or None: one per profile of the fleet, in the fleet's order) on ``fleet`` (``gpu_ops_fleet``), named
    ``<base>-<profile>`` unless named. PoolError names every problem, each starting with its list entry."""
    if not isinstance(fleet, Mapping) or not isinstance(fleet.get("profiles"), Mapping):
        raise PoolError(f"the fleet must be gpu_ops_fleet (the mig_fleet filter's result), not {brief(fleet)}")
    if not isinstance(base, str) or not _DNS1035.match(base):
        raise PoolError(f"the base name must be gpu_ops_triton_name, a DNS label, not {brief(base)}")
    profiles: Mapping[str, Mapping[str, Any]] = fleet["profiles"]
    if not profiles:
        raise PoolError("no GPU node's layout provides a MIG profile: there is nothing for a serving pool to run on")
    if pools is None or (isinstance(pools, (list, str)) and len(pools) == 0):
        pools = list(profiles)
    if not isinstance(pools, list):
        raise PoolError(f"{VARIABLE} must be a list of MIG profiles or pool mappings (empty: a pool per profile), not {brief(pools)}")
    problems: List[str] = []
    entries = [(i, e) for i, e in enumerate(_entry(raw, i, problems) for i, raw in enumerate(pools)) if e is not None]
    provided = ", ".join(sorted(profiles))
    planned: List[Dict[str, Any]] = []
    for index, entry in entries:
        where, profile = f"{VARIABLE}[{index}]", entry["profile"]
        if profile not in profiles:
            problems.append(f"{where}: profile {profile} is in no GPU node's layout; the layouts provide: {provided}")
            continue
        fleet_profile = profiles[profile]
        name = entry["name"] or f"{base}-{profile_slug(profile)}"
        if len(name) > NAME_MAX:
            problems.append(f"{where}: the pool's name {name} is longer than {NAME_MAX} characters: give a shorter name")
        pool = {
            "name": name,
            "headless": f"{name}-headless",
            "profile": profile,
            "resource": fleet_profile["resource"],
            "slices": int(fleet_profile["slices"]),
            "weight": entry["weight"] if entry["weight"] is not None else int(fleet_profile["slices"]),
            "capacity": int(fleet_profile["capacity"]),
            "max_replicas": entry["max_replicas"],
            "min_replicas": entry["min_replicas"],
            "replicas": entry["replicas"],
            "target_queue_time_us": entry["target_queue_time_us"],
            "resources": entry["resources"],
            "index": index,
        }
        planned.append(pool)
    _check_names(planned, problems)
    _size(planned, problems)
    if problems:
        raise PoolError("; ".join(problems))
    for pool in planned:
        del pool["index"]
    return planned


def _check_names(planned: List[Dict[str, Any]], problems: List[str]) -> None:
    seen: Dict[str, int] = {}
    for pool in planned:
        if pool["name"] in seen:
            problems.append(f"{VARIABLE}[{pool['index']}]: the pool name {pool['name']} is also {VARIABLE}[{seen[pool['name']]}]'s: "
                            "give each pool on the same profile its own name")
        else:
            seen[pool["name"]] = pool["index"]


def _size(planned: List[Dict[str, Any]], problems: List[str]) -> None:
    """max_replicas: the profile's capacity for a pool alone on it; pools sharing a profile give theirs and fit in it."""
    by_profile: Dict[str, List[Dict[str, Any]]] = {}
    for pool in planned:
        by_profile.setdefault(pool["profile"], []).append(pool)
    for profile, group in by_profile.items():
        capacity = group[0]["capacity"]
        if len(group) == 1 and group[0]["max_replicas"] is None:
            group[0]["max_replicas"] = capacity
        unsized = [f"{VARIABLE}[{p['index']}]" for p in group if p["max_replicas"] is None]
        if unsized:
            problems.append(f"{', '.join(unsized)}: pools sharing profile {profile} (capacity {capacity}) must each give max_replicas")
            continue
        total = sum(p["max_replicas"] for p in group)
        if total > capacity:
            names = ", ".join(f"{p['name']} {p['max_replicas']}" for p in group)
            problems.append(f"max_replicas of the pools on {profile} ({names}) add up to {total}, more than the {capacity} "
                            f"{profile} devices the layouts provide: those pods could never be scheduled")
        for pool in group:
            for key in ("min_replicas", "replicas"):
                if pool[key] is not None and pool[key] > pool["max_replicas"]:
                    problems.append(f"{VARIABLE}[{pool['index']}].{key} ({pool[key]}) is above the pool's max_replicas ({pool['max_replicas']})")
