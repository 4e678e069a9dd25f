# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: the MIG layout planner.

Not a public API; may change without notice.

One planner serves the modules (``mig_verify``, ``mig_node_state``), the filters (``mig_plan``, ``mig_fleet``) and,
through the fleet model (``_mig_fleet``), the roles and the cluster-side expectations. Given a parsed mig-parted config, a
config name and a node's GPUs, it decides per GPU whether the layout can be realised and
returns the planned MIG devices. Profile facts come from the GPU itself when the caller has
them (``supported_profiles`` as ``mig_info`` returns them) and from the built-in catalog
otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_catalog import (
    GpuModel,
    model_by_device_id,
    model_by_name,
    supported_profiles,
)
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import (
    ConfigEntry,
    MigConfigError,
    MigConfigFile,
    normalize_device_id,
    parse_config,
    parse_entries,
    parse_profile,
)
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._text import brief, is_int


class MigPlanError(ValueError):
    """A layout cannot be realised on the given GPUs (or the GPU list itself is invalid)."""


# Sane hard bounds on what a caller may describe, checked before anything is sized from it: no node has more
# GPUs than this (8 or 16 in practice), and no GPU more memory slices (8) or instances of one profile (7).
MAX_GPUS = 64
MAX_MEMORY_SLICES = 64
MAX_INSTANCES = 64


@dataclass(frozen=True)
class _GiProfile:
    name: str  # canonical, e.g. "1g.10gb+me"
    id: int
    max_instances: int
    compute_slices: int
    placements: Tuple[Tuple[int, int], ...]  # (start, size) in memory slices


@dataclass(frozen=True)
class GpuSpec:
    """What the planner knows about one GPU."""

    index: int
    model: str
    device_ids: Tuple[str, ...]  # the GPU's own id, or every id of its catalog model when only the name is known
    subsystem_id: Optional[str]
    mig_capable: bool
    profiles: Tuple[_GiProfile, ...]
    profile_source: str  # "hardware" | "catalog" | "none"

    @property
    def memory_slices(self) -> int:
        return max((s + n for p in self.profiles for s, n in p.placements), default=0)

    @property
    def compute_slices(self) -> int:
        return max((p.compute_slices for p in self.profiles), default=0)

    def label(self) -> str:
        dev = self.device_ids[0] if len(self.device_ids) == 1 else "/".join(self.device_ids) or "unknown id"
        return f"GPU {self.index} ({self.model}, {dev})"

    def profile(self, name: str) -> Optional[_GiProfile]:
        for p in self.profiles:
            if p.name == name:
                return p
        return None


_PROFILE_SHAPE = "name, id, max_instances and placements [{start, size}] as mig_info returns them"


def _profile_from_dict(p: Any, where: str) -> _GiProfile:
    if not isinstance(p, Mapping):
        raise MigPlanError(f"{where}: supported_profiles entry {brief(p)} is malformed: not a mapping; each needs {_PROFILE_SHAPE}")
    missing = [k for k in ("name", "id", "max_instances", "placements") if k not in p]
    if missing:
        raise MigPlanError(
            f"{where}: supported_profiles entry {brief(dict(p))} is incomplete: it lacks {', '.join(missing)}; each needs {_PROFILE_SHAPE}"
        )
    try:
        prof = parse_profile(p["name"])
    except MigConfigError as exc:
        raise MigPlanError(f"{where}: supported_profiles: {exc}") from None
    here = f"{where}: supported_profiles entry {prof.gpu_instance_name!r}"
    if not is_int(p["id"]) or p["id"] < 0:
        raise MigPlanError(f"{here}: 'id' must be a non-negative integer, not {brief(p['id'])}")
    if not is_int(p["max_instances"]) or not 0 <= p["max_instances"] <= MAX_INSTANCES:
        raise MigPlanError(f"{here}: 'max_instances' must be an integer from 0 to {MAX_INSTANCES}, not {brief(p['max_instances'])}")
    if not isinstance(p["placements"], list):
        raise MigPlanError(f"{here}: 'placements' must be a list of {{start, size}}, not {brief(p['placements'])}")
    placements: List[Tuple[int, int]] = []
    for pl in p["placements"]:
        start: Any = pl.get("start") if isinstance(pl, Mapping) else None
        size: Any = pl.get("size") if isinstance(pl, Mapping) else None
        if not (is_int(start) and is_int(size) and start >= 0 and size >= 1 and start + size <= MAX_MEMORY_SLICES):
            raise MigPlanError(
                f"{here}: placement {brief(pl)} must be {{start, size}} with integers start >= 0, size >= 1 and "
                f"start + size <= {MAX_MEMORY_SLICES} memory slices"
            )
        placements.append((start, size))
    return _GiProfile(
        name=prof.gpu_instance_name,
        id=p["id"],
        max_instances=p["max_instances"],
        compute_slices=prof.gpu_slices,
        placements=tuple(placements),
    )


def _profiles_from_dicts(raw: Sequence[Any], where: str) -> Tuple[_GiProfile, ...]:
    return tuple(_profile_from_dict(p, where) for p in raw)


def gpu_spec(gpu: Mapping[str, Any]) -> GpuSpec:
    """Build a GpuSpec from a dict: ``index`` plus ``pci_device_id`` and/or ``name``; ``supported_profiles`` optional."""
    if not isinstance(gpu, Mapping):
        raise MigPlanError(f"each GPU must be a mapping with 'index' and 'pci_device_id' or 'name', not {brief(gpu)}")
    index: Any = gpu.get("index")
    if not is_int(index) or index < 0:
        raise MigPlanError(f"GPU {brief(dict(gpu))}: 'index' must be a non-negative integer")
    where = f"GPU {index}"
    device_id: Optional[str] = None
    if gpu.get("pci_device_id") not in (None, ""):
        raw_id = gpu["pci_device_id"]
        try:
            device_id = normalize_device_id(raw_id if is_int(raw_id) else str(raw_id))
        except MigConfigError as exc:
            raise MigPlanError(f"{where}: {exc}") from None
    name = gpu.get("name")
    if name is not None and not isinstance(name, str):
        raise MigPlanError(f"{where}: 'name' must be the GPU's name as a string (such as 'NVIDIA A100-SXM4-40GB'), not {brief(name)}")
    if device_id is None and not name:
        raise MigPlanError(f"{where}: give 'pci_device_id' (such as '0x20B010DE') or 'name' (such as 'NVIDIA A100-SXM4-40GB')")
    model: Optional[GpuModel] = None
    if device_id is not None:
        model = model_by_device_id(device_id)
    if model is None and name:
        model = model_by_name(str(name))
    subsystem = gpu.get("pci_subsystem_id") or None
    if subsystem is not None:
        try:
            subsystem = normalize_device_id(subsystem if is_int(subsystem) else str(subsystem))
        except MigConfigError as exc:
            raise MigPlanError(f"{where}: pci_subsystem_id: {exc}") from None
    display = str(name) if name else (model.names[0] if model and model.names else "unknown GPU model")
    device_ids: Tuple[str, ...] = (device_id,) if device_id else (model.device_ids if model else ())

    hw = gpu.get("supported_profiles")
    mode = str(gpu.get("mig_mode_current", ""))
    if hw:
        if not isinstance(hw, list):
            raise MigPlanError(f"{where}: 'supported_profiles' must be a list as mig_info returns it")
        return GpuSpec(index, display, device_ids, subsystem, True, _profiles_from_dicts(hw, where), "hardware")
    if mode == "unsupported":
        return GpuSpec(index, display, device_ids, subsystem, False, (), "hardware")
    if model is None:
        return GpuSpec(index, display, device_ids, subsystem, False, (), "none")
    cat = _profiles_from_dicts(supported_profiles(model), f"catalog {model.key}")
    return GpuSpec(index, display, device_ids, subsystem, model.mig_capable, cat, "catalog")


def expand_gpus(gpus: Any) -> Any:
    """``{count: 8, pci_device_id: "0x20B010DE"}`` (or ``name``) is shorthand for GPUs 0..7 of one model."""
    if isinstance(gpus, Mapping) and "count" in gpus:
        count = gpus["count"]
        if not is_int(count) or not 1 <= count <= MAX_GPUS:
            raise MigPlanError(f"'gpus' shorthand {brief(dict(gpus))}: 'count' must be a positive integer, at most {MAX_GPUS} GPUs per node")
        unknown = sorted(set(gpus) - {"count", "pci_device_id", "pci_subsystem_id", "name"})
        if unknown:
            raise MigPlanError(f"'gpus' shorthand {dict(gpus)!r}: unknown key(s) {', '.join(unknown)}")
        rest = {k: v for k, v in gpus.items() if k != "count"}
        return [dict(rest, index=i) for i in range(count)]
    return gpus


def gpu_specs(gpus: Any) -> List[GpuSpec]:
    gpus = expand_gpus(gpus)
    if not isinstance(gpus, list) or not gpus:
        raise MigPlanError(
            "'gpus' must be a non-empty list of GPUs (dicts with 'index' and 'pci_device_id' or 'name'), "
            "or {count: N, pci_device_id: ...} for N GPUs of one model"
        )
    if len(gpus) > MAX_GPUS:
        raise MigPlanError(f"'gpus' lists {len(gpus)} GPUs, more than the {MAX_GPUS} a node may have")
    specs = [gpu_spec(g) for g in gpus]
    seen: Dict[int, int] = {}
    for s in specs:
        seen[s.index] = seen.get(s.index, 0) + 1
    dupes = sorted(i for i, n in seen.items() if n > 1)
    if dupes:
        raise MigPlanError(f"GPU index(es) {dupes} appear more than once in 'gpus'")
    return sorted(specs, key=lambda s: s.index)


# --------------------------------------------------------------------------- placement


def find_placement(
    spec: GpuSpec, wanted: Sequence[Tuple[_GiProfile, int]]
) -> Optional[List[Tuple[str, int, int]]]:
    """Place every wanted GPU instance on non-overlapping memory slices; None when impossible.

    Backtracking over the real placement sets, largest instances first, with the compute
    slices of all instances bounded by the GPU's. Returns ``(profile, start, size)``.
    """
    if sum(p.compute_slices * n for p, n in wanted) > spec.compute_slices:
        return None
    items: List[_GiProfile] = [p for p, n in wanted for _copy in range(n)]
    items.sort(key=lambda p: (-max((size for _start, size in p.placements), default=0), -p.compute_slices, len(p.placements), p.name))
    chosen: List[Tuple[str, int, int]] = []

    def place(i: int, used: int, last_start: Dict[str, int]) -> bool:
        if i == len(items):
            return True
        prof = items[i]
        # identical instances are interchangeable: only try placements after the previous one's
        floor = last_start.get(prof.name, -1)
        for start, size in prof.placements:
            if start <= floor:
                continue
            mask = ((1 << size) - 1) << start
            if used & mask:
                continue
            chosen.append((prof.name, start, size))
            prev = last_start.get(prof.name)
            last_start[prof.name] = start
            if place(i + 1, used | mask, last_start):
                return True
            chosen.pop()
            if prev is None:
                del last_start[prof.name]
            else:
                last_start[prof.name] = prev
        return False

    return sorted(chosen, key=lambda c: (c[1], c[0])) if place(0, 0, {}) else None


# --------------------------------------------------------------------------- planning


def _config_entries(config: Any, config_name: Any) -> Tuple[Tuple[ConfigEntry, ...], str]:
    if isinstance(config, MigConfigFile):
        return config.select(config_name), str(config_name)
    if isinstance(config, list):  # an inline layout: the entries of one config
        name = str(config_name) if config_name else "<inline layout>"
        return parse_entries(config, f"layout {name!r}"), name
    parsed = parse_config(config)
    return parsed.select(config_name), str(config_name)


def _entry_for(spec: GpuSpec, entries: Sequence[ConfigEntry], where: str) -> ConfigEntry:
    matching = [e for e in entries if e.applies_to(spec.index, spec.device_ids, spec.subsystem_id)]
    if not matching:
        filters = sorted({str(f) for e in entries for f in e.device_filter})
        hint = f"; its device filters are {', '.join(filters)}" if filters else ""
        raise MigPlanError(f"{where}: {spec.label()} is not covered by any entry{hint}")
    if len(matching) > 1:
        raise MigPlanError(
            f"{where}: {spec.label()} is covered by more than one entry: "
            f"{' and '.join(e.describe() for e in matching)}; each GPU must be covered by exactly one"
        )
    return matching[0]


def _plan_gpu(spec: GpuSpec, entry: ConfigEntry, where: str) -> Dict[str, Any]:
    here = f"{where}: {spec.label()}"
    devices = [(p, n) for p, n in entry.mig_devices if n > 0]
    result: Dict[str, Any] = {
        "index": spec.index,
        "model": spec.model,
        "mig_enabled": entry.mig_enabled,
        "devices": {str(p): n for p, n in devices},
        "placements": [],
        "profile_source": spec.profile_source,
    }
    if not entry.mig_enabled:
        return result
    if not spec.mig_capable:
        if spec.profile_source == "none":
            raise MigPlanError(
                f"{here}: unknown GPU model, not in the built-in catalog and no supported_profiles were given; "
                "run gpu_ops.mig_serving.mig_info on the node and pass its gpus"
            )
        raise MigPlanError(f"{here}: this GPU does not support MIG, but {entry.describe()} enables it")

    media = [(p, n) for p, n in devices if p.media_extensions]
    if sum(n for _prof, n in media) > 1:
        listed = ", ".join(f"{p} x{n}" for p, n in media)
        raise MigPlanError(
            f"{here}: more than one media-extension (+me) instance requested ({listed}); a GPU has one set of media engines"
        )

    # Compute instances per GPU-instance profile. A device spanning its GPU instance ("3g.20gb") needs a GPU
    # instance of its own; smaller ones ("1c.3g.20gb") share one, packed as mig-parted packs them: largest
    # first, into the last GPU instance created while it has room, else into a new one.
    compute: Dict[str, Tuple[_GiProfile, List[int]]] = {}
    for prof, _count in devices:
        gi = spec.profile(prof.gpu_instance_name)
        if gi is None:
            names = ", ".join(p.name for p in spec.profiles)
            raise MigPlanError(f"{here}: profile {str(prof)!r} is not supported by this GPU model (supported: {names})")
        compute.setdefault(gi.name, (gi, []))
    # Capacity first, by arithmetic: no list is sized from a count the GPU cannot hold.
    for gi, _sizes in compute.values():
        same_gi = [(p, n) for p, n in devices if p.gpu_instance_name == gi.name]
        least = -(-sum(p.compute * n for p, n in same_gi) // gi.compute_slices)  # GPU instances needed at the least
        if least > gi.max_instances:
            whole = all(p.compute == gi.compute_slices for p, _n in same_gi)
            raise MigPlanError(
                f"{here}: profile {gi.name!r} requested {least} times, but this GPU model allows at most {gi.max_instances}"
                + ("" if whole else " (GPU instances needed for the compute instances asked)")
            )
    for prof, count in devices:
        compute[prof.gpu_instance_name][1].extend([prof.compute] * count)
    wanted: Dict[str, Tuple[_GiProfile, int]] = {}
    for gi, sizes in compute.values():
        instances, room = 0, 0
        for size in sorted(sizes, reverse=True):
            if size <= room:
                room -= size
            else:
                instances, room = instances + 1, gi.compute_slices - size
        wanted[gi.name] = (gi, instances)
    for gi, total in wanted.values():
        if total > gi.max_instances:
            raise MigPlanError(
                f"{here}: profile {gi.name!r} requested {total} times, but this GPU model allows at most {gi.max_instances}"
                + ("" if total == sum(n for p, n in devices if p.gpu_instance_name == gi.name) else " (GPU instances needed for the compute instances asked)")
            )
    placement = find_placement(spec, list(wanted.values()))
    if placement is None:
        asked = " + ".join(f"{n} x {gi.name}" for gi, n in wanted.values())
        used = sum(gi.compute_slices * n for gi, n in wanted.values())
        why = (
            f"they need {used} compute slices and the GPU has {spec.compute_slices}"
            if used > spec.compute_slices
            else f"no placement of them fits the GPU's {spec.memory_slices} memory slices without overlap"
        )
        raise MigPlanError(f"{here}: layout {asked} cannot be realised: {why}")
    result["placements"] = [{"profile": n, "start": s, "size": z} for n, s, z in placement]
    return result


def plan(config: Any, config_name: Any, gpus: Any) -> List[Dict[str, Any]]:
    """Plan ``config_name`` of ``config`` (a mig-parted config mapping/text/MigConfigFile, or an
    inline list of entries) on ``gpus``. Returns one dict per GPU:
    ``{index, model, mig_enabled, devices: {profile: count}, placements, profile_source}``.
    Raises MigConfigError / MigPlanError naming the GPU, the model and the profile."""
    entries, name = _config_entries(config, config_name)
    where = f"config {name!r}"
    specs = gpu_specs(gpus)
    present = {s.index for s in specs}
    for entry in entries:
        if entry.devices != "all":
            missing = [i for i in entry.devices if i not in present]
            if missing:
                raise MigPlanError(
                    f"{where}: {entry.describe()} names GPU index(es) {missing}, but the GPUs given are "
                    f"{sorted(present)}"
                )
    return [_plan_gpu(spec, _entry_for(spec, entries, where), where) for spec in specs]
