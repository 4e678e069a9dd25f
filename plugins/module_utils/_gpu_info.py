# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: the shape of a node's GPU inventory, as mig_info returns it.

Not a public API; may change without notice. Both backends (``_nvidia_smi``, ``_nvml``) return exactly
these keys; the planner (``_mig_plan``) reads them.
"""
from __future__ import annotations

from typing import Literal, TypedDict

MigMode = Literal["enabled", "disabled", "unsupported"]


class Placement(TypedDict):
    """Memory slices a GPU instance occupies or may occupy (``{start,...}:size`` in ``-lgipp``)."""

    start: int
    size: int


class ProfileInfo(TypedDict):
    """A GPU instance profile (``nvidia-smi mig -lgip``, placements from ``-lgipp``)."""

    name: str
    id: int
    max_instances: int
    free_instances: int
    memory_mib: int
    compute_slices: int
    multiprocessors: int
    copy_engines: int
    decoders: int
    encoders: int
    jpeg_decoders: int
    ofa: int
    p2p: bool
    placements: list[Placement]


class GpuInstance(TypedDict):
    """An existing GPU instance (``nvidia-smi mig -lgi``)."""

    id: int
    profile_id: int
    profile: str
    placement: Placement


class ComputeInstance(TypedDict):
    """An existing compute instance (``nvidia-smi mig -lci``)."""

    gpu_instance_id: int
    id: int
    profile_id: int
    profile: str


class GpuInfo(TypedDict):
    """The MIG inventory of one physical GPU."""

    index: int
    name: str
    uuid: str
    pci_bus_id: str
    pci_device_id: str
    pci_subsystem_id: str
    mig_mode_current: MigMode
    mig_mode_pending: MigMode
    gpu_instances: list[GpuInstance]
    compute_instances: list[ComputeInstance]
    supported_profiles: list[ProfileInfo]
