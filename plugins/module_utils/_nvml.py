# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: read-only MIG inventory through NVML (nvidia-ml-py) (not a public API; may change without notice).

``collect()`` returns, per GPU, the same inventory the ``nvidia_smi`` backend parses out of
``nvidia-smi``: identity, MIG mode, the GPU instance profiles the GPU supports (with capacities and
possible placements) and, while MIG is enabled, the existing GPU and compute instances.

Only NVML getters are used; nothing here can change the state of a GPU. ``pynvml`` is imported
lazily so that this module imports on hosts without nvidia-ml-py.

NVML calls can hang with the driver. With a ``timeout`` the read runs in a daemon worker thread that the caller
stops waiting for when the time is up (``NvmlTimeout`` names the call still pending). A C call cannot be
interrupted from Python, so that thread stays blocked until the driver answers; the module reports and exits,
and the process ends with it, unless the thread is stuck inside the kernel, where only the driver can release
it (the task's own ``timeout`` keyword is the outer bound then).
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import re
import threading
from typing import Any, Callable, Iterator

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._gpu_info import ComputeInstance, GpuInfo, GpuInstance, MigMode, Placement, ProfileInfo


class NvmlError(RuntimeError):
    """An NVML call failed; the message names the call, the GPU index and NVML's error string."""

    def __init__(self, call: str, gpu_index: int | None, detail: str, code: int | None = None) -> None:
        self.call = call
        self.gpu_index = gpu_index
        self.detail = detail
        self.code = code
        where = "" if gpu_index is None else f" on GPU {gpu_index}"
        super().__init__(f"NVML call {call} failed{where}: {detail}")


class NvmlTimeout(NvmlError):
    """NVML did not answer within the bound; ``call`` and ``gpu_index`` name the call still pending."""

    def __init__(self, call: str, gpu_index: int | None, timeout: float) -> None:
        super().__init__(call, gpu_index, f"did not return within {timeout:g} s (timeout)")
        self.timeout = timeout
        where = "" if gpu_index is None else f" on GPU {gpu_index}"
        self.args = (f"NVML call {call}{where} did not return within {timeout:g} s (timeout)",)


# Highest NVML_GPU_INSTANCE_PROFILE_* / NVML_COMPUTE_INSTANCE_PROFILE_* values known when this was written
# (nvidia-ml-py 13.x). An older binding on a newer driver may define fewer constants; iterating up to the
# larger of the two still finds every profile the driver knows (unknown values answer INVALID_ARGUMENT).
_KNOWN_GI_PROFILE_COUNT = 0x12
_KNOWN_CI_PROFILE_COUNT = 0x9
# NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1 and _2_SLICE_REV1: the "+me" (media extensions) profiles.
_ME_PROFILE_CONSTANTS = frozenset({0x7, 0x8})
_BUS_ID_RE = re.compile(r"^([0-9A-Fa-f]{1,8}):([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})\.([0-7])$")


def available() -> bool:
    """Return whether nvidia-ml-py (``import pynvml``) can be imported."""
    try:
        import pynvml  # noqa: F401, PLC0415  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        return False
    return True


def collect(nvml: Any | None = None, timeout: float | None = None) -> list[GpuInfo]:
    """Read the MIG inventory of every GPU through NVML.

    ``nvml`` is the pynvml module (the default) or an object with the same functions (tests).
    Raises ``NvmlError`` naming the failed call and GPU; with ``timeout`` (seconds), ``NvmlTimeout`` naming the
    call still pending when the time was up.
    """
    if nvml is None:
        try:
            import pynvml  # noqa: PLC0415  # pylint: disable=import-outside-toplevel
        except ImportError as exc:
            raise NvmlError("import pynvml", None, f"nvidia-ml-py is not installed ({exc})") from exc
        nvml = pynvml
    reader = _Reader(nvml)
    if timeout is None:
        return reader.collect()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["gpus"] = reader.collect()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="gpu-ops-nvml", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        call, gpu_index = reader.pending
        raise NvmlTimeout(call, gpu_index, timeout)
    if "error" in outcome:
        raise outcome["error"]
    gpus: list[GpuInfo] = outcome["gpus"]
    return gpus


def _text(value: Any) -> str:
    """NVML strings arrive as ``str`` or, from older bindings and raw ctypes fields, as ``bytes``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _profile_name(raw: Any) -> str:
    name = _text(raw).strip()
    return name[4:] if name.startswith("MIG ") else name


def _mig_mode(value: int, enabled: int) -> MigMode:
    return "enabled" if value == enabled else "disabled"


def normalize_bus_id(bus_id: str, domain: int, bus: int, device: int) -> str:
    """Return the PCI bus id in nvidia-smi's form ``00000000:00:06.0``.

    NVML's legacy ``busIdLegacy`` (``0000:00:06.0``) and its ``busId`` (``00000000:00:06.0``) are both
    accepted; if the string does not parse, the id is built from the numeric fields (function 0).
    """
    match = _BUS_ID_RE.match(bus_id.strip())
    if match:
        dom, bus_s, dev_s, func = match.groups()
        return f"{int(dom, 16):08X}:{int(bus_s, 16):02X}:{int(dev_s, 16):02X}.{func}"
    return f"{domain:08X}:{bus:02X}:{device:02X}.0"


def _derived_gi_name(constant: int, slices: int, memory_mib: int) -> str:
    """Name for a profile from a driver without the v2 profile info (no ``name``): A100/A30 era only."""
    suffix = "+me" if constant in _ME_PROFILE_CONSTANTS else ""
    return f"{slices}g.{math.ceil(memory_mib / 1024)}gb{suffix}"


def _profile_sort_key(profile: ProfileInfo) -> tuple[int, int, int]:
    # nvidia-smi's order (mig -lgip): by compute slices, then memory, then profile id. This reproduces the
    # H200, A100, A30, H100 NVL, B200 and RTX PRO 6000 captures; NVML's constant order does not.
    return (profile["compute_slices"], profile["memory_mib"], profile["id"])


class _Reader:
    """One NVML session: every call goes through ``_call`` so that failures name the call and the GPU."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.error_type: type[BaseException] = nvml.NVMLError
        self.skip_profile = frozenset({nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_INVALID_ARGUMENT})
        # the call in progress (or the last one), read by collect()'s caller when NVML does not answer in time
        self.pending: tuple[str, int | None] = ("nvmlInit", None)

    def _call(self, name: str, gpu_index: int | None, *args: Any) -> Any:
        self.pending = (name, gpu_index)
        try:
            return getattr(self.nvml, name)(*args)
        except self.error_type as exc:
            code = getattr(exc, "value", None)
            raise NvmlError(name, gpu_index, str(exc), code if isinstance(code, int) else None) from exc

    def collect(self) -> list[GpuInfo]:
        self._call("nvmlInit", None)
        try:
            count = int(self._call("nvmlDeviceGetCount", None))
            result = [self._gpu(index) for index in range(count)]
        except BaseException:
            with contextlib.suppress(self.error_type):  # the original failure matters more
                self.nvml.nvmlShutdown()
            raise
        self._call("nvmlShutdown", None)
        return result

    # -- one GPU -------------------------------------------------------------------------------------------

    def _gpu(self, index: int) -> GpuInfo:
        nvml = self.nvml
        handle = self._call("nvmlDeviceGetHandleByIndex", index, index)
        pci = self._call("nvmlDeviceGetPciInfo", index, handle)
        info: GpuInfo = {
            "index": index,
            "name": _text(self._call("nvmlDeviceGetName", index, handle)),
            "uuid": _text(self._call("nvmlDeviceGetUUID", index, handle)),
            "pci_bus_id": normalize_bus_id(_text(pci.busId), pci.domain, pci.bus, pci.device),
            "pci_device_id": f"0x{int(pci.pciDeviceId):08X}",
            "pci_subsystem_id": f"0x{int(pci.pciSubSystemId):08X}",
            "mig_mode_current": "unsupported",
            "mig_mode_pending": "unsupported",
            "gpu_instances": [],
            "compute_instances": [],
            "supported_profiles": [],
        }
        try:
            current, pending = self._call("nvmlDeviceGetMigMode", index, handle)
        except NvmlError as exc:
            if exc.code == nvml.NVML_ERROR_NOT_SUPPORTED:
                return info
            raise
        info["mig_mode_current"] = _mig_mode(current, nvml.NVML_DEVICE_MIG_ENABLE)
        info["mig_mode_pending"] = _mig_mode(pending, nvml.NVML_DEVICE_MIG_ENABLE)
        enabled = info["mig_mode_current"] == "enabled"

        profiles = self._gi_profiles(index, handle, enabled)
        info["supported_profiles"] = profiles
        if enabled:
            info["gpu_instances"], info["compute_instances"] = self._instances(index, handle, profiles)
        return info

    # -- GPU instance profiles -----------------------------------------------------------------------------

    def _gi_profile_info(self, index: int, handle: Any, constant: int) -> Any:
        """Profile info, v2 (with ``name``) where the driver has it, else v1.

        nvidia-ml-py's ``nvmlDeviceGetGpuInstanceProfileInfo(handle, profile, version=2)`` calls NVML's
        ``nvmlDeviceGetGpuInstanceProfileInfoV`` (``...InfoV`` is an alias of it in the binding);
        version 1 calls the original ``nvmlDeviceGetGpuInstanceProfileInfo``.
        """
        try:
            return self._call("nvmlDeviceGetGpuInstanceProfileInfo", index, handle, constant)
        except NvmlError as exc:
            if exc.code != self.nvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                raise
        return self._call("nvmlDeviceGetGpuInstanceProfileInfo", index, handle, constant, 1)

    def _existing_profiles(self, count: int, info: Callable[[int], Any]) -> Iterator[tuple[int, Any]]:
        """``(constant, info(constant))`` for each profile constant below ``count`` that exists on this GPU (or in this
        driver), the first constant of each profile id only."""
        seen: set[int] = set()
        for constant in range(count):
            try:
                raw = info(constant)
            except NvmlError as exc:
                if exc.code in self.skip_profile:
                    continue  # this profile does not exist on this GPU (or in this driver)
                raise
            if int(raw.id) not in seen:
                seen.add(int(raw.id))
                yield constant, raw

    def _gi_profiles(self, index: int, handle: Any, enabled: bool) -> list[ProfileInfo]:
        profiles: list[ProfileInfo] = []
        count = max(int(self.nvml.NVML_GPU_INSTANCE_PROFILE_COUNT), _KNOWN_GI_PROFILE_COUNT)
        for constant, raw in self._existing_profiles(count, lambda c: self._gi_profile_info(index, handle, c)):
            profile_id = int(raw.id)
            memory_mib = int(raw.memorySizeMB)
            slices = int(raw.sliceCount)
            raw_name = getattr(raw, "name", None)
            name = _profile_name(raw_name) if raw_name else _derived_gi_name(constant, slices, memory_mib)
            max_instances = int(raw.instanceCount)
            # Every instance is free while MIG is disabled: skip the query (nvml.h documents NOT_SUPPORTED then).
            free = int(self._call("nvmlDeviceGetGpuInstanceRemainingCapacity", index, handle, profile_id)) if enabled else max_instances
            profiles.append(
                {
                    "name": name,
                    "id": profile_id,
                    "max_instances": max_instances,
                    "free_instances": free,
                    "memory_mib": memory_mib,
                    "compute_slices": slices,
                    "multiprocessors": int(raw.multiprocessorCount),
                    "copy_engines": int(raw.copyEngineCount),
                    "decoders": int(raw.decoderCount),
                    "encoders": int(raw.encoderCount),
                    "jpeg_decoders": int(raw.jpegCount),
                    "ofa": int(raw.ofaCount),
                    "p2p": bool(raw.isP2pSupported),
                    "placements": self._placements(index, handle, profile_id),
                }
            )
        profiles.sort(key=_profile_sort_key)
        return profiles

    def _placements(self, index: int, handle: Any, profile_id: int) -> list[Placement]:
        """Possible placements of a profile (answered while MIG is disabled too).

        NVML writes every placement whatever the count passed in (a 2-entry buffer for a 7-placement profile
        came back with count 7 on a real H200), so the count is asked first with a NULL buffer.
        """
        count = ctypes.c_uint(0)
        self._call("nvmlDeviceGetGpuInstancePossiblePlacements", index, handle, profile_id, None, ctypes.byref(count))
        if count.value == 0:
            return []
        buffer = (self.nvml.c_nvmlGpuInstancePlacement_t * count.value)()
        self._call("nvmlDeviceGetGpuInstancePossiblePlacements", index, handle, profile_id, buffer, ctypes.byref(count))
        return [{"start": int(p.start), "size": int(p.size)} for p in buffer[: count.value]]

    # -- existing instances --------------------------------------------------------------------------------

    def _instances(
        self, index: int, handle: Any, profiles: list[ProfileInfo]
    ) -> tuple[list[GpuInstance], list[ComputeInstance]]:
        nvml = self.nvml
        by_id = {p["id"]: p for p in profiles}
        gpu_instances: list[GpuInstance] = []
        compute_instances: list[ComputeInstance] = []
        ci_profiles: dict[int, list[tuple[int, int, str]]] = {}
        for profile in profiles:
            capacity = max(profile["max_instances"], 1)
            buffer = (nvml.c_nvmlGpuInstance_t * capacity)()
            count = ctypes.c_uint(capacity)
            self._call("nvmlDeviceGetGpuInstances", index, handle, profile["id"], buffer, ctypes.byref(count))
            for gi_handle in buffer[: count.value]:
                gi = self._call("nvmlGpuInstanceGetInfo", index, gi_handle)
                gi_profile = by_id.get(int(gi.profileId), profile)
                gi_id = int(gi.id)
                gpu_instances.append(
                    {
                        "id": gi_id,
                        "profile_id": int(gi.profileId),
                        "profile": gi_profile["name"],
                        "placement": {"start": int(gi.placement.start), "size": int(gi.placement.size)},
                    }
                )
                if gi_profile["id"] not in ci_profiles:
                    ci_profiles[gi_profile["id"]] = self._ci_profiles(index, gi_handle, gi_profile)
                for ci_profile_id, ci_capacity, ci_name in ci_profiles[gi_profile["id"]]:
                    ci_buffer = (nvml.c_nvmlComputeInstance_t * ci_capacity)()
                    ci_count = ctypes.c_uint(ci_capacity)
                    self._call(
                        "nvmlGpuInstanceGetComputeInstances",
                        index,
                        gi_handle,
                        ci_profile_id,
                        ci_buffer,
                        ctypes.byref(ci_count),
                    )
                    for ci_handle in ci_buffer[: ci_count.value]:
                        ci = self._call("nvmlComputeInstanceGetInfo", index, ci_handle)
                        compute_instances.append(
                            {
                                "gpu_instance_id": gi_id,
                                "id": int(ci.id),
                                "profile_id": int(ci.profileId),
                                "profile": ci_name,
                            }
                        )
        gpu_instances.sort(key=lambda gi: gi["id"])
        compute_instances.sort(key=lambda ci: (ci["gpu_instance_id"], ci["id"]))
        return gpu_instances, compute_instances

    def _ci_profile_info(self, index: int, gi_handle: Any, constant: int) -> Any:
        """Compute instance profile info, v2 (with ``name``) where the driver has it, else v1."""
        shared = self.nvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
        try:
            return self._call("nvmlGpuInstanceGetComputeInstanceProfileInfo", index, gi_handle, constant, shared)
        except NvmlError as exc:
            if exc.code != self.nvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                raise
        return self._call("nvmlGpuInstanceGetComputeInstanceProfileInfo", index, gi_handle, constant, shared, 1)

    def _ci_profiles(self, index: int, gi_handle: Any, gi_profile: ProfileInfo) -> list[tuple[int, int, str]]:
        """(profile id, max instances, name) of each compute instance profile of this GPU instance."""
        result: list[tuple[int, int, str]] = []
        count = max(int(self.nvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT), _KNOWN_CI_PROFILE_COUNT)
        for _constant, raw in self._existing_profiles(count, lambda c: self._ci_profile_info(index, gi_handle, c)):
            slices = int(raw.sliceCount)
            raw_name = getattr(raw, "name", None)
            if raw_name:
                name = _profile_name(raw_name)
            elif slices >= gi_profile["compute_slices"]:
                name = gi_profile["name"]
            else:
                name = f"{slices}c.{gi_profile['name']}"
            result.append((int(raw.id), max(int(raw.instanceCount), 1), name))
        return result
