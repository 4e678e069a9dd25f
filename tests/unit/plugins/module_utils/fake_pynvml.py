# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# pylint: skip-file
# Reason: under ansible-test sanity's pylint (deprecated_calls plugin) astroid's inference on this
# ctypes-heavy test double runs for more than ten minutes without finishing; ruff and mypy --strict
# check this file instead (tests/quality/test_static.py).
"""Test equipment: a small, faithful stand-in for nvidia-ml-py's ``pynvml`` module (MIG getters only).

``FakeNvml`` has the same function names, signatures, return types and errors as the real binding for
every call ``plugins/module_utils/_nvml.py`` makes. It reuses the real package's constants, ``NVMLError``
(so errors carry the real ``value`` codes and subclasses) and ctypes structures (so attribute names, and
which fields come back as ``str`` or ``bytes``, are the binding's own). Handles are real ctypes pointers
of the binding's handle types, and out-parameters are the ctypes arrays and ``byref`` counts the real
functions write through.

Anything it does not implement raises ``AttributeError``: a test that passes proves the code under test
uses only these calls (none of NVML's setters, creators or destroyers is implemented).

Behaviour enforced, as documented in nvml.h and as seen on a real H200 (driver 580.159.04):

* every call before ``nvmlInit`` (or after the matching ``nvmlShutdown``) -> ``NVML_ERROR_UNINITIALIZED``;
* a GPU without MIG: ``nvmlDeviceGetMigMode`` and every MIG call -> ``NVML_ERROR_NOT_SUPPORTED``;
* profile info for a constant the GPU lacks -> ``NOT_SUPPORTED``; for a constant beyond the driver's
  ``NVML_GPU_INSTANCE_PROFILE_COUNT`` (0x11 on the H200's 580 driver) -> ``INVALID_ARGUMENT``;
  an unknown profile id -> ``INVALID_ARGUMENT`` (all three seen on the H200);
* profile info and possible placements answer while MIG is disabled (seen on the H200);
* ``nvmlDeviceGetGpuInstances`` and ``nvmlDeviceGetGpuInstanceRemainingCapacity`` refuse with
  ``NOT_SUPPORTED`` while MIG is disabled, as nvml.h documents. (The H200's 580 driver answers them
  instead, with 0 instances and the full capacity; refusing is the stricter contract.)
* out-buffers smaller than what NVML writes raise ``FakeNvmlMisuse``: the real library overruns them
  (a 2-entry placement buffer got 7 entries on the H200, and the process crashed later).
"""
from __future__ import annotations

import ctypes
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml
from pynvml import (
    NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
    NVML_DEVICE_MIG_DISABLE,
    NVML_DEVICE_MIG_ENABLE,
    NVML_ERROR_FUNCTION_NOT_FOUND,
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNINITIALIZED,
    NVML_SUCCESS,
    NVMLError,
    c_nvmlComputeInstance_t,
    c_nvmlComputeInstanceInfo_t,
    c_nvmlComputeInstanceProfileInfo_t,
    c_nvmlComputeInstanceProfileInfo_v2_t,
    c_nvmlDevice_t,
    c_nvmlGpuInstance_t,
    c_nvmlGpuInstanceInfo_t,
    c_nvmlGpuInstancePlacement_t,
    c_nvmlGpuInstanceProfileInfo_t,
    c_nvmlGpuInstanceProfileInfo_v2_t,
    nvmlPciInfo_t,
    nvmlPciInfo_v2_t,
)

# PCI subsystem id (Sub System Id of nvidia-smi -q) of our real H200: the default for a FakeGpu.
H200_PCI_SUBSYSTEM_ID = 0x18BF10DE
# NVML_GPU_INSTANCE_PROFILE_COUNT of the H200's 580.159.04 driver: constant 0x11 answered INVALID_ARGUMENT.
H200_580_DRIVER_GI_PROFILE_COUNT = 0x11

_GI_SUFFIX_TO_CONSTANT = {"": "", "+me": "_REV1", "+gfx": "_GFX", "-me": "_NO_ME", "+me.all": "_ALL_ME"}
_LGIPP_RE = re.compile(r"^GPU\s+(\d+)\s+Profile ID\s+(\d+)\s+Placements?\s*:\s*\{([\d,]*)\}:(\d+)\s*$")
_LGIP_LINE1_RE = re.compile(
    r"^\|\s+(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)/(\d+)\s+([\d.]+)\s+(Yes|No)\s+(\d+)\s+(\d+)\s+(\d+)\s+\|$"
)
_LGIP_LINE2_RE = re.compile(r"^\|\s+(\d+)\s+(\d+)\s+(\d+)\s+\|$")


class FakeNvmlMisuse(AssertionError):
    """The code under test did something the real NVML answers with undefined behaviour (e.g. overruns a buffer)."""


# Plain ctypes copies of the v2 structures: the binding's own (_PrintableStructure) decode ``name`` to str;
# older bindings returned bytes. Used with ``legacy_binding=True``.
class _BytesGpuInstanceProfileInfoV2(ctypes.Structure):
    _fields_ = c_nvmlGpuInstanceProfileInfo_v2_t._fields_


class _BytesComputeInstanceProfileInfoV2(ctypes.Structure):
    _fields_ = c_nvmlComputeInstanceProfileInfo_v2_t._fields_


@dataclass
class GiProfile:
    """One GPU instance profile, as NVML's profile info struct describes it."""

    constant: int
    id: int
    name: str  # with NVML's "MIG " prefix
    slices: int
    instance_count: int
    memory_mib: int
    multiprocessors: int
    copy_engines: int
    decoders: int
    encoders: int
    jpeg: int
    ofa: int
    p2p: bool = False
    placements: list[tuple[int, int]] = field(default_factory=list)

    @property
    def short_name(self) -> str:
        return self.name.removeprefix("MIG ")


@dataclass
class CiProfile:
    constant: int  # NVML_COMPUTE_INSTANCE_PROFILE_*; NVML uses it as the profile id too
    slices: int
    instance_count: int
    multiprocessors: int
    name: str


@dataclass
class FakeCi:
    id: int
    profile_id: int
    start: int


@dataclass
class FakeGi:
    id: int
    profile: GiProfile
    start: int
    size: int
    compute_instances: dict[int, FakeCi] = field(default_factory=dict)


@dataclass
class FakeGpu:
    name: str
    uuid: str
    bus_id: str  # nvidia-smi / NVML busId form: 00000000:00:06.0
    pci_device_id: int
    pci_subsystem_id: int = H200_PCI_SUBSYSTEM_ID
    mig_supported: bool = True
    mig_current: int = NVML_DEVICE_MIG_DISABLE
    mig_pending: int = NVML_DEVICE_MIG_DISABLE
    profiles: list[GiProfile] = field(default_factory=list)  # in NVML constant order
    gpu_instances: dict[int, FakeGi] = field(default_factory=dict)
    driver_gi_profile_count: int = pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT
    driver_ci_profile_count: int = pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT

    def profile_by_id(self, profile_id: int) -> GiProfile | None:
        return next((p for p in self.profiles if p.id == profile_id), None)

    @property
    def total_compute_slices(self) -> int:
        return max((p.slices for p in self.profiles), default=0)

    def ci_profiles(self, gi: FakeGi) -> list[CiProfile]:
        """Compute instance profiles of a GPU instance: 1, 2, 3, 4 compute slices and the whole GI."""
        gi_slices = gi.profile.slices
        result = []
        for slices in sorted({1, 2, 3, 4, gi_slices}):
            if slices > gi_slices:
                continue
            constant = getattr(pynvml, f"NVML_COMPUTE_INSTANCE_PROFILE_{slices}_SLICE")
            name = gi.profile.name if slices == gi_slices else f"MIG {slices}c.{gi.profile.short_name}"
            result.append(
                CiProfile(
                    constant=constant,
                    slices=slices,
                    instance_count=gi_slices // slices,
                    multiprocessors=gi.profile.multiprocessors * slices // gi_slices,
                    name=name,
                )
            )
        return result

    def remaining_capacity(self, profile: GiProfile) -> int:
        """How many more GIs of ``profile`` fit next to the existing ones (free placements and compute)."""
        occupied = {s for gi in self.gpu_instances.values() for s in range(gi.start, gi.start + gi.size)}
        used_compute = sum(gi.profile.slices for gi in self.gpu_instances.values())
        same = sum(1 for gi in self.gpu_instances.values() if gi.profile.id == profile.id)
        fits = 0
        for start, size in profile.placements:
            slots = set(range(start, start + size))
            if slots & occupied:
                continue
            occupied |= slots
            fits += 1
        return max(0, min(fits, profile.instance_count - same, (self.total_compute_slices - used_compute) // profile.slices))


def _count_obj(count_ref: Any) -> Any:
    """The c_uint behind ``ctypes.byref(c_uint)`` or ``ctypes.pointer(c_uint)`` (what NVML's ``unsigned int *`` gets)."""
    obj = getattr(count_ref, "_obj", None)  # ctypes.byref() result
    if obj is None and isinstance(count_ref, ctypes._Pointer):
        obj = count_ref.contents
    if not isinstance(obj, ctypes.c_uint):
        raise FakeNvmlMisuse(f"count must be ctypes.byref(c_uint) or a pointer to c_uint, got {count_ref!r}")
    return obj


def _check_buffer(buffer: Any, element: Any, needed: int, call: str) -> None:
    if not isinstance(buffer, ctypes.Array) or buffer._type_ is not element:
        raise FakeNvmlMisuse(f"{call}: buffer must be a ctypes array of {element.__name__}, got {buffer!r}")
    if len(buffer) < needed:
        raise FakeNvmlMisuse(f"{call}: buffer of {len(buffer)} entries, but NVML writes {needed} (overrun)")


def _token(handle: Any, kind: Any) -> int | None:
    if not isinstance(handle, kind):
        return None
    value: int | None = ctypes.cast(handle, ctypes.c_void_p).value
    return value


def parse_lgipp(path: Path) -> dict[int, dict[int, list[tuple[int, int]]]]:
    """``nvidia-smi mig -lgipp`` -> {gpu index: {profile id: [(start, size), ...]}}."""
    result: dict[int, dict[int, list[tuple[int, int]]]] = {}
    for line in path.read_text().splitlines():
        match = _LGIPP_RE.match(line.strip())
        if not match:
            continue
        gpu, profile_id, starts, size = match.groups()
        placements = [(int(s), int(size)) for s in starts.split(",") if s]
        result.setdefault(int(gpu), {})[int(profile_id)] = placements
    return result


def parse_lgip(path: Path) -> list[dict[str, Any]]:
    """``nvidia-smi mig -lgip`` (the two-line 525+ layout) -> profile field dicts, in table order.

    Memory is printed in GiB with 2 decimals; NVML's memorySizeMB is a multiple of 128 MiB on every capture
    we hold, so rounding to 128 MiB recovers it (checked against the H200's real NVML values).
    """
    lines = path.read_text().splitlines()
    result = []
    for first, second in zip(lines, lines[1:]):
        m1 = _LGIP_LINE1_RE.match(first.strip())
        m2 = _LGIP_LINE2_RE.match(second.strip())
        if not (m1 and m2):
            continue
        _gpu, name, pid, _free, total, gib, p2p, sm, dec, enc = m1.groups()
        ce, jpeg, ofa = m2.groups()
        result.append(
            {
                "name": f"MIG {name}",
                "id": int(pid),
                "isP2pSupported": int(p2p == "Yes"),
                "sliceCount": int(name.split("g.", 1)[0]),
                "instanceCount": int(total),
                "multiprocessorCount": int(sm),
                "copyEngineCount": int(ce),
                "decoderCount": int(dec),
                "encoderCount": int(enc),
                "jpegCount": int(jpeg),
                "ofaCount": int(ofa),
                "memorySizeMB": round(float(gib) * 1024 / 128) * 128,
            }
        )
    return result


def _constant_for(entry: dict[str, Any], earlier: list[dict[str, Any]]) -> str:
    """NVML_GPU_INSTANCE_PROFILE_* name for a -lgip row: slices + suffix; a bigger-memory 1-slice twin is REV2."""
    short = entry["name"].removeprefix("MIG ")
    match = re.match(r"^(\d+)g\.\d+gb(.*)$", short)
    if not match or match.group(2) not in _GI_SUFFIX_TO_CONSTANT:
        raise ValueError(f"cannot map profile {short!r} to an NVML constant")
    slices, suffix = match.groups()
    tail = _GI_SUFFIX_TO_CONSTANT[suffix]
    if not suffix and any(
        e["sliceCount"] == entry["sliceCount"] and e["memorySizeMB"] < entry["memorySizeMB"] for e in earlier
    ):
        tail = "_REV2"
    constant = f"NVML_GPU_INSTANCE_PROFILE_{slices}_SLICE{tail}"
    if not hasattr(pynvml, constant):
        raise ValueError(f"{constant} is not defined by the installed nvidia-ml-py")
    return constant


def _gi_profile(entry: dict[str, Any], constant: int, placements: list[tuple[int, int]]) -> GiProfile:
    return GiProfile(
        constant=constant,
        id=int(entry["id"]),
        name=str(entry["name"]),
        slices=int(entry["sliceCount"]),
        instance_count=int(entry["instanceCount"]),
        memory_mib=int(entry["memorySizeMB"]),
        multiprocessors=int(entry["multiprocessorCount"]),
        copy_engines=int(entry["copyEngineCount"]),
        decoders=int(entry["decoderCount"]),
        encoders=int(entry["encoderCount"]),
        jpeg=int(entry["jpegCount"]),
        ofa=int(entry["ofaCount"]),
        p2p=bool(entry["isP2pSupported"]),
        placements=list(placements),
    )


class FakeNvml:
    """Stand-in for the ``pynvml`` module. State: ``gpus``; record: ``calls`` as (function, GPU index)."""

    NVMLError = NVMLError
    c_nvmlDevice_t = c_nvmlDevice_t
    c_nvmlGpuInstance_t = c_nvmlGpuInstance_t
    c_nvmlComputeInstance_t = c_nvmlComputeInstance_t
    c_nvmlGpuInstancePlacement_t = c_nvmlGpuInstancePlacement_t
    # The binding's constant counts; every other NVML_* constant is copied in at the end of this file.
    NVML_GPU_INSTANCE_PROFILE_COUNT: int = pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT
    NVML_COMPUTE_INSTANCE_PROFILE_COUNT: int = pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT

    def __init__(
        self, gpus: list[FakeGpu] | None = None, *, profile_info_v2: bool = True, legacy_binding: bool = False
    ) -> None:
        self.gpus: list[FakeGpu] = list(gpus or [])
        self.profile_info_v2 = profile_info_v2  # False: a driver without the ...InfoV entry points
        self.legacy_binding = legacy_binding  # True: bytes strings and the legacy 13-char busId
        self.init_count = 0
        self.calls: list[tuple[str, int | None]] = []
        self.failures: dict[tuple[str, int | None], int] = {}

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"fake_pynvml does not implement {name!r}; add it (faithfully) before using it")

    # -- building state ------------------------------------------------------------------------------------

    @classmethod
    def from_profiles_json(cls, path: Path, **kwargs: Any) -> FakeNvml:
        """One GPU from a real NVML capture (``nvml_profiles.json``) plus its directory's nvidia-smi captures.

        Placements come from ``nvidia-smi_mig_-lgipp.txt``; UUID and bus id from
        ``nvidia-smi_--query-gpu.csv``; the PCI device and subsystem ids from ``nvidia-smi_-q.txt``.
        """
        data = json.loads(path.read_text())
        directory = path.parent
        placements = parse_lgipp(directory / "nvidia-smi_mig_-lgipp.txt").get(0, {})
        csv_lines = (directory / "nvidia-smi_--query-gpu.csv").read_text().splitlines()
        row = dict(zip([h.strip() for h in csv_lines[0].split(",")], [v.strip() for v in csv_lines[1].split(",")]))
        details = (directory / "nvidia-smi_-q.txt").read_text()
        device_id = re.search(r"\bDevice Id\s*:\s*(0x[0-9A-Fa-f]+)", details)
        if device_id is None:
            raise ValueError(f"no Device Id in {directory / 'nvidia-smi_-q.txt'}")
        subsystem_id = re.search(r"\bSub System Id\s*:\s*(0x[0-9A-Fa-f]+)", details)
        if subsystem_id is None:
            raise ValueError(f"no Sub System Id in {directory / 'nvidia-smi_-q.txt'}")
        entries = sorted(data["profiles"], key=lambda e: getattr(pynvml, e["nvml_constant"]))
        gpu = FakeGpu(
            name=data["gpu"],
            uuid=row["uuid"],
            bus_id=row["pci.bus_id"],
            pci_device_id=int(device_id.group(1), 16),
            pci_subsystem_id=int(subsystem_id.group(1), 16),
            mig_current=data["mig_mode"][0],
            mig_pending=data["mig_mode"][1],
            profiles=[
                _gi_profile(e, getattr(pynvml, e["nvml_constant"]), placements.get(int(e["id"]), [])) for e in entries
            ],
            driver_gi_profile_count=H200_580_DRIVER_GI_PROFILE_COUNT,
        )
        return cls([gpu], **kwargs)

    @staticmethod
    def gpu_from_lgip(
        lgip: Path,
        lgipp: Path | None,
        *,
        name: str,
        uuid: str,
        bus_id: str,
        pci_device_id: int,
        pci_subsystem_id: int = H200_PCI_SUBSYSTEM_ID,
    ) -> FakeGpu:
        """A GPU whose profiles come from ``nvidia-smi mig -lgip`` (and placements from ``-lgipp``)."""
        entries = parse_lgip(lgip)
        placements = parse_lgipp(lgipp).get(0, {}) if lgipp else {}
        profiles = []
        for position, entry in enumerate(entries):
            constant = getattr(pynvml, _constant_for(entry, entries[:position]))
            profiles.append(_gi_profile(entry, constant, placements.get(entry["id"], [])))
        profiles.sort(key=lambda p: p.constant)
        return FakeGpu(
            name=name,
            uuid=uuid,
            bus_id=bus_id,
            pci_device_id=pci_device_id,
            pci_subsystem_id=pci_subsystem_id,
            profiles=profiles,
        )

    def set_mig_mode_state(self, index: int, current: int, pending: int | None = None) -> None:
        """Scenario helper (not an NVML call): put GPU ``index`` in a MIG mode."""
        self.gpus[index].mig_current = current
        self.gpus[index].mig_pending = current if pending is None else pending

    def add_gpu_instance(self, index: int, profile_id: int, start: int, gi_id: int) -> FakeGi:
        """Scenario helper: an existing GPU instance (MIG must be enabled; placement must be possible and free)."""
        gpu = self.gpus[index]
        profile = gpu.profile_by_id(profile_id)
        if gpu.mig_current != NVML_DEVICE_MIG_ENABLE or profile is None:
            raise ValueError(f"GPU {index}: MIG disabled or no profile {profile_id}")
        size = next((s for st, s in profile.placements if st == start), None)
        if size is None or gi_id in gpu.gpu_instances:
            raise ValueError(f"GPU {index}: placement {start} impossible for profile {profile_id}, or id {gi_id} taken")
        slots = set(range(start, start + size))
        if any(slots & set(range(g.start, g.start + g.size)) for g in gpu.gpu_instances.values()):
            raise ValueError(f"GPU {index}: placement {start}:{size} overlaps an existing GPU instance")
        gi = FakeGi(id=gi_id, profile=profile, start=start, size=size)
        gpu.gpu_instances[gi_id] = gi
        return gi

    def add_compute_instance(self, index: int, gi_id: int, ci_profile_id: int, ci_id: int) -> FakeCi:
        """Scenario helper: an existing compute instance inside GPU instance ``gi_id``."""
        gpu = self.gpus[index]
        gi = gpu.gpu_instances[gi_id]
        profile = next((p for p in gpu.ci_profiles(gi) if p.constant == ci_profile_id), None)
        used = sum(gpu_ci_slices(gpu, gi, ci) for ci in gi.compute_instances.values())
        if profile is None or ci_id in gi.compute_instances or used + profile.slices > gi.profile.slices:
            raise ValueError(f"GPU {index} GI {gi_id}: cannot add CI profile {ci_profile_id} as id {ci_id}")
        ci = FakeCi(id=ci_id, profile_id=ci_profile_id, start=used)
        gi.compute_instances[ci_id] = ci
        return ci

    def fail(self, call: str, code: int, gpu_index: int | None = None) -> None:
        """Make ``call`` (on GPU ``gpu_index``, or on any GPU) raise NVMLError(code)."""
        self.failures[(call, gpu_index)] = code

    # -- internals -----------------------------------------------------------------------------------------

    def _enter(self, call: str, gpu_index: int | None = None) -> None:
        self.calls.append((call, gpu_index))
        if self.init_count <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        code = self.failures.get((call, gpu_index), self.failures.get((call, None)))
        if code is not None:
            raise NVMLError(code)

    def _gpu(self, call: str, handle: Any) -> tuple[int, FakeGpu]:
        token = _token(handle, c_nvmlDevice_t)
        index = None if token is None else token - 0x1000
        self._enter(call, index if index is not None and 0 <= index < len(self.gpus) else None)
        if index is None or not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return index, self.gpus[index]

    def _mig_gpu(self, call: str, handle: Any) -> tuple[int, FakeGpu]:
        index, gpu = self._gpu(call, handle)
        if not gpu.mig_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return index, gpu

    def _gi(self, call: str, handle: Any) -> tuple[FakeGpu, FakeGi]:
        token = _token(handle, c_nvmlGpuInstance_t)
        index = None if token is None else (token >> 16) - 0x10
        valid = index is not None and 0 <= index < len(self.gpus)
        self._enter(call, index if valid else None)
        if not valid or token is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index] if index is not None else None
        gi = gpu.gpu_instances.get(token & 0xFFFF) if gpu is not None else None
        if gpu is None or gi is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if gpu.mig_current != NVML_DEVICE_MIG_ENABLE:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu, gi

    def _text(self, value: str) -> Any:
        return value.encode() if self.legacy_binding else value

    @staticmethod
    def _gi_handle(index: int, gi_id: int) -> Any:
        return ctypes.cast(ctypes.c_void_p(((0x10 + index) << 16) | gi_id), c_nvmlGpuInstance_t)

    @staticmethod
    def _ci_handle(index: int, gi_id: int, ci_id: int) -> Any:
        return ctypes.cast(ctypes.c_void_p(((0x20 + index) << 24) | (gi_id << 8) | ci_id), c_nvmlComputeInstance_t)

    # -- pynvml functions ----------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls.append(("nvmlInit", None))
        code = self.failures.get(("nvmlInit", None))
        if code is not None:
            raise NVMLError(code)
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.init_count -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._enter("nvmlDeviceGetHandleByIndex", index)
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return ctypes.cast(ctypes.c_void_p(0x1000 + index), c_nvmlDevice_t)

    def nvmlDeviceGetName(self, handle: Any) -> Any:
        _index, gpu = self._gpu("nvmlDeviceGetName", handle)
        return self._text(gpu.name)

    def nvmlDeviceGetUUID(self, handle: Any) -> Any:
        _index, gpu = self._gpu("nvmlDeviceGetUUID", handle)
        return self._text(gpu.uuid)

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        _index, gpu = self._gpu("nvmlDeviceGetPciInfo", handle)
        domain, bus, rest = gpu.bus_id.split(":")
        device = rest.split(".")[0]
        legacy = f"{int(domain, 16):04X}:{int(bus, 16):02X}:{int(device, 16):02X}.0"
        fields = {
            "domain": int(domain, 16),
            "bus": int(bus, 16),
            "device": int(device, 16),
            "pciDeviceId": gpu.pci_device_id,
            "pciSubSystemId": gpu.pci_subsystem_id,
        }
        if self.legacy_binding:  # old bindings: nvmlPciInfo_v2_t, whose busId is the 13-char legacy form
            return nvmlPciInfo_v2_t(busId=legacy.encode(), **fields)
        return nvmlPciInfo_t(busIdLegacy=legacy.encode(), busId=gpu.bus_id.encode(), **fields)

    def nvmlDeviceGetMigMode(self, device: Any) -> list[int]:
        _index, gpu = self._mig_gpu("nvmlDeviceGetMigMode", device)
        return [gpu.mig_current, gpu.mig_pending]

    def nvmlDeviceGetGpuInstanceProfileInfo(self, device: Any, profile: int, version: int = 2) -> Any:
        _index, gpu = self._mig_gpu("nvmlDeviceGetGpuInstanceProfileInfo", device)
        if version not in (1, 2) or (version == 2 and not self.profile_info_v2):
            raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
        if not 0 <= profile < gpu.driver_gi_profile_count:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        found = next((p for p in gpu.profiles if p.constant == profile), None)
        if found is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        values = {
            "id": found.id,
            "isP2pSupported": int(found.p2p),
            "sliceCount": found.slices,
            "instanceCount": found.instance_count,
            "multiprocessorCount": found.multiprocessors,
            "copyEngineCount": found.copy_engines,
            "decoderCount": found.decoders,
            "encoderCount": found.encoders,
            "jpegCount": found.jpeg,
            "ofaCount": found.ofa,
            "memorySizeMB": found.memory_mib,
        }
        if version == 1:
            return c_nvmlGpuInstanceProfileInfo_t(**values)
        if self.legacy_binding:
            return _BytesGpuInstanceProfileInfoV2(version=pynvml.nvmlGpuInstanceProfileInfo_v2, name=found.name.encode(), **values)
        info = c_nvmlGpuInstanceProfileInfo_v2_t()
        for key, value in values.items():
            setattr(info, key, value)
        info.name = found.name.encode()
        return info

    def nvmlDeviceGetGpuInstanceProfileInfoV(self, device: Any, profile: int, version: int = 2) -> Any:
        return self.nvmlDeviceGetGpuInstanceProfileInfo(device, profile, version)

    def nvmlDeviceGetGpuInstanceRemainingCapacity(self, device: Any, profileId: int) -> int:
        _index, gpu = self._mig_gpu("nvmlDeviceGetGpuInstanceRemainingCapacity", device)
        profile = gpu.profile_by_id(profileId)
        if profile is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if gpu.mig_current != NVML_DEVICE_MIG_ENABLE:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.remaining_capacity(profile)

    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self, device: Any, profileId: int, placementsRef: Any, countRef: Any
    ) -> int:
        call = "nvmlDeviceGetGpuInstancePossiblePlacements"
        _index, gpu = self._mig_gpu(call, device)
        count = _count_obj(countRef)
        profile = gpu.profile_by_id(profileId)
        if profile is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if placementsRef is not None:
            _check_buffer(placementsRef, c_nvmlGpuInstancePlacement_t, len(profile.placements), call)
            for slot, (start, size) in enumerate(profile.placements):
                placementsRef[slot].start = start
                placementsRef[slot].size = size
        count.value = len(profile.placements)
        return int(NVML_SUCCESS)

    def nvmlDeviceGetGpuInstances(self, device: Any, profileId: int, gpuInstancesRef: Any, countRef: Any) -> int:
        call = "nvmlDeviceGetGpuInstances"
        index, gpu = self._mig_gpu(call, device)
        count = _count_obj(countRef)
        profile = gpu.profile_by_id(profileId)
        if profile is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if gpu.mig_current != NVML_DEVICE_MIG_ENABLE:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        _check_buffer(gpuInstancesRef, c_nvmlGpuInstance_t, profile.instance_count, call)
        found = [gi for gi in gpu.gpu_instances.values() if gi.profile.id == profileId]
        for slot, gi in enumerate(found):
            gpuInstancesRef[slot] = self._gi_handle(index, gi.id)
        count.value = len(found)
        return int(NVML_SUCCESS)

    def nvmlDeviceGetGpuInstanceById(self, device: Any, gpuInstanceId: int) -> Any:
        index, gpu = self._mig_gpu("nvmlDeviceGetGpuInstanceById", device)
        if gpu.mig_current != NVML_DEVICE_MIG_ENABLE:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if gpuInstanceId not in gpu.gpu_instances:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return self._gi_handle(index, gpuInstanceId)

    def nvmlGpuInstanceGetInfo(self, gpuInstance: Any) -> Any:
        gpu, gi = self._gi("nvmlGpuInstanceGetInfo", gpuInstance)
        info = c_nvmlGpuInstanceInfo_t()
        info.device = ctypes.cast(ctypes.c_void_p(0x1000 + self.gpus.index(gpu)), c_nvmlDevice_t)
        info.id = gi.id
        info.profileId = gi.profile.id
        info.placement = c_nvmlGpuInstancePlacement_t(start=gi.start, size=gi.size)
        return info

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, device: Any, profile: int, engProfile: int, version: int = 2
    ) -> Any:
        gpu, gi = self._gi("nvmlGpuInstanceGetComputeInstanceProfileInfo", device)
        if version not in (1, 2) or (version == 2 and not self.profile_info_v2):
            raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
        if engProfile != NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED or not 0 <= profile < gpu.driver_ci_profile_count:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        found = next((p for p in gpu.ci_profiles(gi) if p.constant == profile), None)
        if found is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        values = {
            "id": found.constant,
            "sliceCount": found.slices,
            "instanceCount": found.instance_count,
            "multiprocessorCount": found.multiprocessors,
            "sharedCopyEngineCount": gi.profile.copy_engines,
            "sharedDecoderCount": gi.profile.decoders,
            "sharedEncoderCount": gi.profile.encoders,
            "sharedJpegCount": gi.profile.jpeg,
            "sharedOfaCount": gi.profile.ofa,
        }
        if version == 1:
            return c_nvmlComputeInstanceProfileInfo_t(**values)
        if self.legacy_binding:
            return _BytesComputeInstanceProfileInfoV2(
                version=pynvml.nvmlComputeInstanceProfileInfo_v2, name=found.name.encode(), **values
            )
        info = c_nvmlComputeInstanceProfileInfo_v2_t()
        for key, value in values.items():
            setattr(info, key, value)
        info.name = found.name.encode()
        return info

    def nvmlGpuInstanceGetComputeInstanceProfileInfoV(
        self, device: Any, profile: int, engProfile: int, version: int = 2
    ) -> Any:
        return self.nvmlGpuInstanceGetComputeInstanceProfileInfo(device, profile, engProfile, version)

    def nvmlGpuInstanceGetComputeInstances(
        self, gpuInstance: Any, profileId: int, computeInstancesRef: Any, countRef: Any
    ) -> int:
        call = "nvmlGpuInstanceGetComputeInstances"
        gpu, gi = self._gi(call, gpuInstance)
        count = _count_obj(countRef)
        profile = next((p for p in gpu.ci_profiles(gi) if p.constant == profileId), None)
        if profile is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        _check_buffer(computeInstancesRef, c_nvmlComputeInstance_t, profile.instance_count, call)
        found = [ci for ci in gi.compute_instances.values() if ci.profile_id == profileId]
        index = self.gpus.index(gpu)
        for slot, ci in enumerate(found):
            computeInstancesRef[slot] = self._ci_handle(index, gi.id, ci.id)
        count.value = len(found)
        return int(NVML_SUCCESS)

    def nvmlComputeInstanceGetInfo(self, computeInstance: Any) -> Any:
        token = _token(computeInstance, c_nvmlComputeInstance_t)
        index = None if token is None else (token >> 24) - 0x20
        valid = token is not None and index is not None and 0 <= index < len(self.gpus)
        self._enter("nvmlComputeInstanceGetInfo", index if valid else None)
        if not valid or token is None or index is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        gi = gpu.gpu_instances.get((token >> 8) & 0xFFFF)
        ci = gi.compute_instances.get(token & 0xFF) if gi is not None else None
        if gi is None or ci is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if gpu.mig_current != NVML_DEVICE_MIG_ENABLE:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        info = c_nvmlComputeInstanceInfo_t()
        info.device = ctypes.cast(ctypes.c_void_p(0x1000 + index), c_nvmlDevice_t)
        info.gpuInstance = self._gi_handle(index, gi.id)
        info.id = ci.id
        info.profileId = ci.profile_id
        info.placement.start = ci.start
        info.placement.size = next(p.slices for p in gpu.ci_profiles(gi) if p.constant == ci.profile_id)
        return info

    def nvmlComputeInstanceGetInfo_v2(self, computeInstance: Any) -> Any:
        return self.nvmlComputeInstanceGetInfo(computeInstance)


def gpu_ci_slices(gpu: FakeGpu, gi: FakeGi, ci: FakeCi) -> int:
    return next(p.slices for p in gpu.ci_profiles(gi) if p.constant == ci.profile_id)


# The real module's constants (plain data, not functions): NVML_* values, the struct versions.
for _name, _value in vars(pynvml).items():
    if _name.startswith("NVML_") and isinstance(_value, (int, str)):
        setattr(FakeNvml, _name, _value)
