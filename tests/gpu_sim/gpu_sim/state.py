# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The simulated GPUs: a JSON state file, its lock, and the driver's rules for MIG mode, reset and instances.

Every command (nvidia-smi, nvidia-mig-parted, gpu-sim) opens a ``session()``: an fcntl lock on
``<state>.lock`` (shared to read, exclusive to write), the state loaded, and, when it changed, written back
atomically (temporary file, fsync, rename). Each change appends an entry to the operations log.

Fixture paths in comments are relative to ``tests/data/shared/fixtures/nvidia-smi/``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tables import DEFAULT_DRIVER, FULL_CI_PROFILE_ID, LAYOUTS, MODELS, GiProfile, GpuModel, gi_id_for

DEFAULT_STATE = "/var/lib/gpu-sim/state.json"
FORMAT = 1

# NVML error strings as nvidia-smi prints them, and the exit code used with each (the NVML return code).
IN_USE = "In use by another client"  # documented/a100-sxm4-80gb/dgx-station-kr-notes/..._pending-in-use.txt
NOT_SUPPORTED = "Not Supported"  # documented/a100-sxm4-40gb/mig-user-guide/..._passthrough-pending.txt
INSUFFICIENT = "Insufficient Resources"  # ...mig-user-guide/nvidia-smi_mig_-cgi_19,19,14,9_insufficient-resources.txt
NOT_FOUND = "Not Found"  # documented/a30/user-session-535.183.01/01_nvidia-smi_mig_-lgi_no-instances.txt
NVML_RC = {IN_USE: 19, NOT_SUPPORTED: 3, INSUFFICIENT: 23, NOT_FOUND: 6}


class SimError(Exception):
    """A driver call failed; ``reason`` is the NVML error string."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StateMissing(Exception):
    """No state file: the simulated driver is not loaded."""


@dataclass
class ComputeInstance:
    id: int
    profile_id: int
    start: int  # placement inside the GPU instance (compute slices)
    size: int
    uuid: str


@dataclass
class GpuInstance:
    id: int
    profile_id: int
    start: int  # placement (memory slices)
    size: int
    compute_instances: list[ComputeInstance] = field(default_factory=list)


@dataclass
class Process:
    pid: int
    name: str
    used_mib: int = 0  # --query-compute-apps used_memory (set-busy --used-mib)


@dataclass
class Gpu:
    index: int
    model: str
    uuid: str
    bus_id: str
    mig_current: bool = False
    mig_pending: bool = False
    resettable: bool = True
    persistence: bool = True
    busy: list[Process] = field(default_factory=list)
    gpu_instances: list[GpuInstance] = field(default_factory=list)

    @property
    def spec(self) -> GpuModel:
        return MODELS[self.model]

    def holders(self) -> str:
        """The processes holding the GPU, for simulator diagnostics: 'pid 42 (tritonserver), ...'."""
        return ", ".join(f"pid {p.pid} ({p.name})" for p in self.busy)


@dataclass
class LogEntry:
    time: str
    op: str
    gpu: int | None
    detail: str


@dataclass
class State:
    driver: str
    gpus: list[Gpu]
    next_uuid: int = 1
    log: list[LogEntry] = field(default_factory=list)
    format: int = FORMAT
    apply_failure: str | None = None  # gpu-sim set-apply-failure: the message every mig-parted apply fails with
    # gpu-sim set-hang: {"match": text, "seconds": n}; an nvidia-smi whose arguments contain the text sleeps n seconds
    hang: dict[str, Any] | None = None

    def record(self, op: str, gpu: int | None, detail: str) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        self.log.append(LogEntry(now, op, gpu, detail))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"


# -- loading and saving -----------------------------------------------------------------------------------------


def state_path() -> Path:
    return Path(os.environ.get("GPU_SIM_STATE") or DEFAULT_STATE)


def _from_json(data: Any) -> State:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a gpu-sim state file of format {FORMAT}")
    gpus = [
        Gpu(
            index=g["index"],
            model=g["model"],
            uuid=g["uuid"],
            bus_id=g["bus_id"],
            mig_current=g["mig_current"],
            mig_pending=g["mig_pending"],
            resettable=g["resettable"],
            persistence=g["persistence"],
            busy=[Process(**p) for p in g["busy"]],
            gpu_instances=[
                GpuInstance(
                    gi["id"], gi["profile_id"], gi["start"], gi["size"], [ComputeInstance(**ci) for ci in gi["compute_instances"]]
                )
                for gi in g["gpu_instances"]
            ],
        )
        for g in data["gpus"]
    ]
    for gpu in gpus:
        if gpu.model not in MODELS:
            raise ValueError(f"unknown GPU model {gpu.model!r} in the state file")
    if data["driver"] not in LAYOUTS:
        raise ValueError(f"unknown driver version {data['driver']!r} in the state file")
    failure = data.get("apply_failure")
    if failure is not None and not isinstance(failure, str):
        raise ValueError("apply_failure must be a string or null in the state file")
    hang = data.get("hang")
    if hang is not None and not (
        isinstance(hang, dict) and isinstance(hang.get("match"), str) and isinstance(hang.get("seconds"), int) and hang["seconds"] > 0
    ):
        raise ValueError("hang must be null or {match: string, seconds: integer > 0} in the state file")
    return State(data["driver"], gpus, data["next_uuid"], [LogEntry(**e) for e in data["log"]], apply_failure=failure, hang=hang)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: Path, exclusive: bool) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a", encoding="utf-8") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def session(write: bool = False) -> Iterator[State]:
    """The state, under the lock; written back (also after an error: a real GPU keeps what was done) if changed."""
    path = state_path()
    if not path.exists():
        raise StateMissing(str(path))
    with _locked(path, exclusive=write):
        text = path.read_text(encoding="utf-8")
        state = _from_json(json.loads(text))
        try:
            yield state
        finally:
            if write:
                new = state.to_json()
                if new != text:
                    _write_atomic(path, new)


def create(model_key: str, count: int, driver: str = DEFAULT_DRIVER) -> State:
    """A fresh state: ``count`` GPUs of one model, MIG disabled, no instances, not busy, resettable."""
    model = MODELS[model_key]
    if not 1 <= count <= len(model.bus_ids):
        raise ValueError(f"--count must be 1..{len(model.bus_ids)} for {model_key}")
    gpus = [Gpu(i, model.key, f"GPU-{i:08x}-1111-2222-3333-444444444444", model.bus_ids[i]) for i in range(count)]
    state = State(driver, gpus)
    state.record("init", None, f"{count} x {model.key}, driver {driver}")
    path = state_path()
    with _locked(path, exclusive=True):
        _write_atomic(path, state.to_json())
    return state


# -- rules ----------------------------------------------------------------------------------------------------


def mode_word(enabled: bool) -> str:
    return "Enabled" if enabled else "Disabled"


def _clear_instances(gpu: Gpu) -> int:
    count = len(gpu.gpu_instances)
    gpu.gpu_instances = []
    return count


def set_mig_mode(state: State, gpu: Gpu, enabled: bool) -> str | None:
    """nvmlDeviceSetMigMode: the pending mode is set; it becomes current at once unless the GPU cannot be reset now.

    Returns None when the mode is current, else why it stays pending: ``NOT_SUPPORTED`` when the GPU cannot be
    reset (A100 in a passthrough VM: ...mig-user-guide/nvidia-smi_-i_0_-mig_1_passthrough-pending.txt) or
    ``IN_USE`` when processes hold it (...dgx-station-kr-notes/nvidia-smi_-i_0_-mig_1_pending-in-use.txt). On
    bare metal with nothing holding the GPU the change is immediate (...mig-user-guide/nvidia-smi_-i_0_-mig_1.txt).
    """
    before = (gpu.mig_current, gpu.mig_pending)
    gpu.mig_pending = enabled
    blocked: str | None = None
    if gpu.mig_current != enabled:
        if not gpu.resettable:
            blocked = NOT_SUPPORTED
        elif gpu.busy:
            blocked = IN_USE
        else:
            gpu.mig_current = enabled
            _clear_instances(gpu)
    if (gpu.mig_current, gpu.mig_pending) != before:
        detail = f"current {mode_word(gpu.mig_current)}, pending {mode_word(gpu.mig_pending)}"
        state.record("mig-mode", gpu.index, detail + (f" ({blocked})" if blocked else ""))
    return blocked


def reset(state: State, gpu: Gpu) -> str | None:
    """nvidia-smi --gpu-reset: applies the pending MIG mode and destroys all instances.

    Fails with ``NOT_SUPPORTED`` where the GPU cannot be reset (...mig-user-guide/nvidia-smi_--gpu-reset_passthrough.txt)
    and with ``IN_USE`` while processes hold it.
    """
    if not gpu.resettable:
        return NOT_SUPPORTED
    if gpu.busy:
        return IN_USE
    before = gpu.mig_current
    gpu.mig_current = gpu.mig_pending
    destroyed = _clear_instances(gpu)
    state.record("reset", gpu.index, f"MIG {mode_word(before)} -> {mode_word(gpu.mig_current)}, {destroyed} GPU instance(s) destroyed")
    return None


def boot(state: State) -> list[str]:
    """A reboot: every GPU comes up in its pending MIG mode without instances; processes are gone."""
    changes: list[str] = []
    for gpu in state.gpus:
        parts = []
        if gpu.mig_current != gpu.mig_pending:
            parts.append(f"MIG {mode_word(gpu.mig_current)} -> {mode_word(gpu.mig_pending)}")
            gpu.mig_current = gpu.mig_pending
        destroyed = _clear_instances(gpu)
        if destroyed:
            parts.append(f"{destroyed} GPU instance(s) lost")
        if gpu.busy:
            parts.append(f"processes gone: {gpu.holders()}")
            gpu.busy = []
        if parts:
            changes.append(f"GPU {gpu.index}: " + ", ".join(parts))
    state.record("boot", None, "; ".join(changes) or "no change")
    return changes


# -- GPU instance placement -----------------------------------------------------------------------------------


def _overlaps(a_start: int, a_size: int, b_start: int, b_size: int) -> bool:
    return a_start < b_start + b_size and b_start < a_start + a_size


def _free(instances: list[GpuInstance], start: int, size: int) -> bool:
    return not any(_overlaps(start, size, gi.start, gi.size) for gi in instances)


def choose_placement(model: GpuModel, instances: list[GpuInstance], profile: GiProfile) -> int | None:
    """Where the driver puts a new GPU instance of ``profile``, or None (Insufficient Resources).

    Among the free placements it takes the one that overlaps the fewest placements (of all profiles) still free,
    the lowest start on a tie: the choice that keeps the most room. This reproduces every -cgi output of
    documented/a100-sxm4-40gb/mig-user-guide (e.g. 19,19,14,9 -> slices 6, 4, 0:2, then Insufficient Resources;
    9,19,14,19 -> 4:4, 0, 2:2, 1), documented/a100-pcie-40gb/nvidia-smi_mig_-cgi_19x7_-i_3.txt (GI 13, 11, 12, 7..10),
    h100-pcie-80gb/scaleway-525.125.06 and GPU 0 of a100-sxm4-80gb/dcgm-issue138 (all-balanced: 3g 4:4, 2g 0:2, 1g 2:1, 3:1).
    """
    if sum(1 for gi in instances if gi.profile_id == profile.id) >= profile.instances:
        return None
    candidates = [s for s in profile.starts if _free(instances, s, profile.size)]
    if not candidates:
        return None
    still_free = [(s, p.size) for p in model.profiles for s in p.starts if _free(instances, s, p.size)]

    def cost(start: int) -> tuple[int, int]:
        return sum(1 for s, size in still_free if _overlaps(start, profile.size, s, size)), start

    return min(candidates, key=cost)


def free_instances(model: GpuModel, instances: list[GpuInstance], profile: GiProfile) -> int:
    """The Free of -lgip's Free/Total: how many more instances of the profile fit (greedy from the left)."""
    taken = list(instances)
    added = 0
    existing = sum(1 for gi in instances if gi.profile_id == profile.id)
    for start in profile.starts:
        if existing + added >= profile.instances:
            break
        if _free(taken, start, profile.size):
            taken.append(GpuInstance(-1, profile.id, start, profile.size))
            added += 1
    return added


def create_gpu_instance(state: State, gpu: Gpu, profile: GiProfile) -> GpuInstance:
    start = choose_placement(gpu.spec, gpu.gpu_instances, profile)
    if start is None:
        raise SimError(INSUFFICIENT)
    gi = GpuInstance(gi_id_for(start, profile.size, gpu.spec.memory_slices), profile.id, start, profile.size)
    gpu.gpu_instances.append(gi)
    state.record("create-gi", gpu.index, f"GI {gi.id} MIG {profile.name} (profile {profile.id}) at {start}:{profile.size}")
    return gi


def gi_profile(gpu: Gpu, gi: GpuInstance) -> GiProfile:
    profile = gpu.spec.profile(gi.profile_id)
    assert profile is not None, f"GPU instance {gi.id} has unknown profile {gi.profile_id}"
    return profile


def ci_name(gpu: Gpu, gi: GpuInstance, ci: ComputeInstance) -> str:
    """'1g.5gb' for a compute instance spanning its GPU instance, '1c.3g.20gb' for a part of it."""
    profile = gi_profile(gpu, gi)
    return profile.name if ci.size == profile.compute_slices else f"{ci.size}c.{profile.name}"


def create_full_compute_instance(state: State, gpu: Gpu, gi: GpuInstance) -> ComputeInstance:
    """The default compute instance (``-C``): all compute slices of the GPU instance."""
    slices = gi_profile(gpu, gi).compute_slices
    if gi.compute_instances:
        raise SimError(INSUFFICIENT)
    ci = ComputeInstance(0, FULL_CI_PROFILE_ID[slices], 0, slices, f"MIG-{state.next_uuid:08x}-aaaa-5bbb-8ccc-dddddddddddd")
    state.next_uuid += 1
    gi.compute_instances.append(ci)
    state.record("create-ci", gpu.index, f"CI {ci.id} in GI {gi.id} ({ci_name(gpu, gi, ci)}, {ci.uuid})")
    return ci


def destroy_compute_instance(state: State, gpu: Gpu, gi: GpuInstance, ci: ComputeInstance) -> None:
    if gpu.busy:  # the processes run on the MIG devices
        raise SimError(IN_USE)
    gi.compute_instances.remove(ci)
    state.record("destroy-ci", gpu.index, f"CI {ci.id} in GI {gi.id}")


def destroy_gpu_instance(state: State, gpu: Gpu, gi: GpuInstance) -> None:
    if gpu.busy or gi.compute_instances:  # a GPU instance with compute instances is in use
        raise SimError(IN_USE)
    gpu.gpu_instances.remove(gi)
    state.record("destroy-gi", gpu.index, f"GI {gi.id}")


def listed_instances(gpu: Gpu) -> list[GpuInstance]:
    """GPU instances in nvidia-smi's order: by profile in -lgip order, then by ID.

    As in ...mig-user-guide/nvidia-smi_mig_-lgi_2-1-1-1-1-1.txt (1g GIs 7..13 before the 2g GI 5) and
    a100-sxm4-80gb/dcgm-issue138; -dgi/-dci walk the same order (h100-pcie-80gb/scaleway-525.125.06/..._-dci_and_-dgi.txt).
    """
    order = {p.id: n for n, p in enumerate(gpu.spec.profiles)}
    return sorted(gpu.gpu_instances, key=lambda gi: (order[gi.profile_id], gi.id))
