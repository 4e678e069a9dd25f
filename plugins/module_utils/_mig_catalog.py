# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: catalog of MIG profiles per GPU model (not a public API; may change without notice).

The catalog answers "which MIG GPU-instance profiles does this GPU model offer, with which profile ids,
capacities and placements" when the GPU itself cannot be asked: render mode, the sandbox, AWX check runs
and the cluster-side expectations. On a node the hardware's own table (``nvidia-smi mig -lgip`` /
``-lgipp`` or NVML, which answer even while MIG is disabled) wins; the unit tests keep this catalog equal
to the real nvidia-smi captures of the source repository's test data (named "test capture <name>" below;
not part of the built collection).

Models are keyed by PCI device id (``0x20B010DE``: device ``20B0``, vendor ``10DE``), as nvidia-smi prints
it in ``--query-gpu=pci.device_id`` and as mig-parted's ``device-filter`` uses it.

What each field holds:

* ``id``: the GPU-instance profile id, the ``ID`` column of ``nvidia-smi mig -lgip``.
* ``compute_slices``: N of the profile's ``Ng`` prefix.
* ``memory_slices``: the placement size from ``-lgipp`` (``{0,2,4,6}:2`` -> 2); ``placements`` are the
  start indexes in memory slices.
* ``memory_mib``: an exact MiB value where one was observed (NVML ``memorySizeMB``, or the memory total
  nvidia-smi shows for a MIG device of that profile, which is the GPU instance's memory); otherwise
  ``round(GiB * 1024)`` of the ``-lgip`` column, which nvidia-smi prints with two decimals. The value
  changes between driver releases (A100 and H100 PCIe captures differ by up to 0.25 GiB, B200 ones by
  1.5 GiB), so treat it as informative; the source named per model says which driver's table it is.
* ``multiprocessors``: the ``SM`` column of ``-lgip``.

Left out on purpose, because no complete table (profile ids, capacities, placements) was found in a
real capture or in NVIDIA's documentation; the hardware table is used for them on a node:

* B200 (0x290110DE) and GB200 (0x294110DE): the captures found (mig-parted PR #166/#187, gpu-operator
  PR #1303, mig-parted issue #227) are cut after the first four profiles, and the MIG User Guide's
  B200 table gives fractions and instance counts only (no profile ids, SMs, MiB or placements).
* GH200 144G HBM3e (0x234810DE): mig-parted PR #139 shows only the first profiles.
* H100 96GB / GH200 (0x234210DE, 0x233D10DE), H20 (0x232910DE), PG506-96GB (0x20B610DE): the User Guide
  has a fraction table for "H100 96GB (H100 on GH200)" but no capture with ids, SMs and MiB was found.
* A800 (0x20F310DE, 0x20F510DE, 0x20F610DE), H800 (0x232210DE, 0x232410DE, 0x233A10DE): not in the MIG
  User Guide's list of supported GPUs and no capture found; mig-parted groups them with A100/H100 by
  profile names only, which does not establish SM counts or memory.
* B300 (0x318210DE), GB300 (0x31C210DE): no capture, no User Guide table.

The H200 NVL (0x233B10DE) is included in the H200 model: the User Guide gives one table for the
"H200 141GB" product, and its list of supported GPUs names H200-SXM5 and H200 NVL, both 141GB; the SM
counts and MiB of that model are those of our own H200 SXM capture and were not checked on an NVL card.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_GUIDE = "https://docs.nvidia.com/datacenter/tesla/mig-user-guide/supported-mig-profiles.html"
_GUIDE_GPUS = "https://docs.nvidia.com/datacenter/tesla/mig-user-guide/supported-gpus.html"
_FIXTURES = "shared/fixtures/nvidia-smi/"


@dataclass(frozen=True)
class CatalogProfile:
    """One MIG GPU-instance profile of one GPU model."""

    name: str
    id: int
    compute_slices: int
    memory_slices: int
    memory_mib: int
    max_instances: int
    placements: tuple[int, ...]
    multiprocessors: int | None = None


@dataclass(frozen=True)
class GpuModel:
    """A GPU model: the PCI device ids and nvidia-smi names that share one MIG profile table."""

    key: str
    names: tuple[str, ...]
    device_ids: tuple[str, ...]
    memory_slices: int
    compute_slices: int
    profiles: tuple[CatalogProfile, ...]
    source: str
    mig_capable: bool = True


# Columns of every profile row below:
#   name, GI profile id, compute slices, memory slices, memory MiB, max instances, placements, SMs

# The GPUs with 7 compute slices and 8 memory slices (A100, H100, H200) share one profile table except for
# the memory sizes in the names, the MiB and the SM counts: profile ids, slice counts, instance counts and
# placements are the same in every -lgip/-lgipp capture of them. Columns: compute prefix, name suffix, GI
# profile id, compute slices, memory slices, max instances, placements. The memory in a profile's name and
# its MiB come from the model's ``memory`` row, keyed by the profile's memory slices.
_SEVEN_OF_EIGHT = (
    ("1g", "", 19, 1, 1, 7, (0, 1, 2, 3, 4, 5, 6)),
    ("1g", "+me", 20, 1, 1, 1, (0, 1, 2, 3, 4, 5, 6)),
    ("1g", "", 15, 1, 2, 4, (0, 2, 4, 6)),
    ("2g", "", 14, 2, 2, 3, (0, 2, 4)),
    ("3g", "", 9, 3, 4, 2, (0, 4)),
    ("4g", "", 5, 4, 4, 1, (0,)),
    ("7g", "", 0, 7, 8, 1, (0,)),
)


def _seven_of_eight(
    key: str, names: tuple[str, ...], device_ids: tuple[str, ...], memory: dict[int, tuple[int, int]],
    sms: tuple[int, ...], source: str,
) -> GpuModel:
    """Build a 7-compute, 8-memory-slice model.

    ``memory`` maps a profile's memory slices to (GB in its name, MiB); ``sms`` gives the SMs of 1g, 1g with
    2 memory slices, 2g, 3g, 4g and 7g (1g+me has 1g's).
    """
    per_row = (sms[0], *sms)
    profiles = tuple(
        CatalogProfile(
            f"{prefix}.{memory[mem][0]}gb{suffix}", gi_id, compute, mem, memory[mem][1], count, placements,
            per_row[row],
        )
        for row, (prefix, suffix, gi_id, compute, mem, count, placements) in enumerate(_SEVEN_OF_EIGHT)
    )
    return GpuModel(key, names, device_ids, 8, 7, profiles, source)


# A100 40GB. Source: MIG User Guide -lgip/-lgipp (R470-R535 era copy), stored whole as
# test capture documented/a100-sxm4-40gb/mig-user-guide/. MiB = round(GiB * 1024).
_A100_40GB = _seven_of_eight(
    "A100-SXM4-40GB", ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB", "A100-SXM4-40GB", "A100-PCIE-40GB"), ("0x20B010DE", "0x20B110DE", "0x20F110DE"),
    {1: (5, 4864), 2: (10, 9851), 4: (20, 19968), 8: (40, 40192)}, (14, 14, 28, 42, 56, 98),
    f"{_GUIDE} (A100 table: profiles, instance counts; 1g.10gb needs R525+, 1g.5gb+me R470+); "
    f"-lgip/-lgipp from the MIG User Guide, {_FIXTURES}documented/a100-sxm4-40gb/mig-user-guide/; "
    f"the R450 A100-PCIE-40GB capture {_FIXTURES}documented/a100-pcie-40gb/ agrees on ids, counts, "
    "placements and SMs. Device ids per mig-parted config-default.yaml (A100-40GB) and pci.ids "
    "(20B0 A100 SXM4 40GB, 20B1/20F1 A100 PCIe 40GB).",
)

# A100 80GB. Source: 515.86.01 capture of an A100 80GB PCIe (-lgip, and MIG device memory 9728/19968/40192
# MiB; public code archive index id 36981796389), 535.54.03 telegraf capture of an A100-SXM4-80GB
# (1g.20gb = 19968 MiB, 14 SMs; test capture a100-sxm4-80gb/telegraf-535.54.03/), and an
# A100 80GB -lgip with 1g.20gb (index id 23354834134). Placements: the User Guide's A100 diagram,
# shared by 40GB and 80GB ("the profile names will change according to the memory proportion").
_A100_80GB = _seven_of_eight(
    "A100-SXM4-80GB", ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"), ("0x20B210DE", "0x20B510DE"),
    {1: (10, 9728), 2: (20, 19968), 4: (40, 40192), 8: (80, 80896)}, (14, 14, 28, 42, 56, 98),
    f"{_GUIDE} (A100 table, 80GB names); -lgip of an A100 80GB PCIe at 515.86.01 with MIG device "
    "memory (public code archive index id 36981796389) and an A100 80GB -lgip listing 1g.20gb "
    f"(index id 23354834134); {_FIXTURES}documented/a100-sxm4-80gb/telegraf-535.54.03/ (1g.20gb "
    "19968 MiB, device id 20B210DE); placements as the A100 40GB -lgipp and the User Guide's A100 "
    "diagram. 0x20B510DE is the A100 80GB PCIe (pci.ids, mig-parted config-default.yaml).",
)

# A30. Source: 535.183.01 capture (-lgip, -lgipp, MIG device memory 5952/11968 MiB),
# test capture documented/a30/user-session-535.183.01/.
_A30 = GpuModel(
    key="A30",
    names=("NVIDIA A30",),
    device_ids=("0x20B710DE",),
    memory_slices=4,
    compute_slices=4,
    profiles=(
        CatalogProfile("1g.6gb", 14, 1, 1, 5952, 4, (0, 1, 2, 3), 14),
        CatalogProfile("1g.6gb+me", 21, 1, 1, 5952, 1, (0, 1, 2, 3), 14),
        CatalogProfile("2g.12gb", 5, 2, 2, 11968, 2, (0, 2), 28),
        CatalogProfile("2g.12gb+me", 6, 2, 2, 11968, 1, (0, 2), 28),
        CatalogProfile("4g.24gb", 0, 4, 4, 24003, 1, (0,), 56),
    ),
    source=(
        f"{_GUIDE} (A30 table; 2g.12gb+me needs R525+); -lgip/-lgipp at 535.183.01, "
        f"{_FIXTURES}documented/a30/user-session-535.183.01/."
    ),
)

# H100 80GB SXM5 (HBM3). Source: -lgip and -lgipp of an "NVIDIA H100 80GB HBM3" (driver not stated;
# public code archive index id 8225626544); exact MiB from the 535.104.12 8-GPU capture,
# test capture documented/h100-80gb-hbm3/cloud-native-docs-ocp-535.104.12/
# (1g.10gb 9984, 2g.20gb 20096, 3g.40gb 40448 MiB).
_H100_SXM = _seven_of_eight(
    "H100-SXM5-80GB", ("NVIDIA H100 80GB HBM3",), ("0x233010DE",),
    {1: (10, 9984), 2: (20, 20096), 4: (40, 40448), 8: (80, 81152)}, (16, 26, 32, 60, 64, 132),
    f"{_GUIDE} (H100 80GB table, PCIe and SXM5); -lgip/-lgipp of an NVIDIA H100 80GB HBM3 (public "
    "code archive index id 8225626544); MIG device memory at 535.104.12 from "
    f"{_FIXTURES}documented/h100-80gb-hbm3/cloud-native-docs-ocp-535.104.12/.",
)

# H100 PCIe 80GB. Source: 570.169 -lgip (MiB, SMs) and 7x1g.10gb capture (9984 MiB),
# test capture documented/h100-pcie-80gb/user-notes-570.169/; placements from the
# 525.125.06 -lgipp, .../h100-pcie-80gb/scaleway-525.125.06/ (its memory column is 0.12-0.25 GiB lower).
_H100_PCIE = _seven_of_eight(
    "H100-PCIE-80GB", ("NVIDIA H100 PCIe",), ("0x233110DE",),
    {1: (10, 9984), 2: (20, 20091), 4: (40, 40448), 8: (80, 81152)}, (14, 14, 30, 46, 62, 114),
    f"{_GUIDE} (H100 80GB table, PCIe and SXM5); -lgip at 570.169, "
    f"{_FIXTURES}documented/h100-pcie-80gb/user-notes-570.169/; -lgip/-lgipp at 525.125.06, "
    f"{_FIXTURES}documented/h100-pcie-80gb/scaleway-525.125.06/.",
)

# H100 NVL (94GB). Source: 560.35.03 capture (-lgip, -lgipp, MIG device memory 11008/22144/47488 MiB),
# test capture documented/h100-nvl/azure-560.35.03/.
_H100_NVL = _seven_of_eight(
    "H100-NVL", ("NVIDIA H100 NVL",), ("0x232110DE",),
    {1: (12, 11008), 2: (24, 22144), 4: (47, 47488), 8: (94, 95355)}, (16, 26, 32, 60, 64, 132),
    f"{_GUIDE} (H100 94GB table, PCIe and SXM5); -lgip/-lgipp at 560.35.03, "
    f"{_FIXTURES}documented/h100-nvl/azure-560.35.03/.",
)

# H200 141GB. Source: our own capture at 580.159.04 (-lgip, -lgipp, NVML memorySizeMB),
# test capture h200-mig-disabled/. H200 NVL: see the module docstring.
_H200 = _seven_of_eight(
    "H200", ("NVIDIA H200", "NVIDIA H200 NVL"), ("0x233510DE", "0x233B10DE"),
    {1: (18, 16384), 2: (35, 33280), 4: (71, 71424), 8: (141, 143360)}, (16, 26, 32, 60, 64, 132),
    f"{_FIXTURES}h200-mig-disabled/ (driver 580.159.04: -lgip, -lgipp, NVML memorySizeMB; device "
    f"0x233510DE); {_GUIDE} (one H200 141GB table); H200 NVL listed as a 141GB MIG GPU in "
    f"{_GUIDE_GPUS} and keyed with the H200 in mig-parted config-default.yaml; its SMs and MiB "
    "are the H200 SXM capture's, not checked on an NVL card.",
)

# RTX PRO 6000 Blackwell (Server, Workstation and Max-Q Workstation Editions; one User Guide table).
# Source: 580.105.08 -lgip of a Max-Q Workstation Edition and its 1g.24gb MIG device (24192 MiB),
# test capture documented/rtx-pro-6000-blackwell-max-q/user-notes-580.105.08/;
# 12 memory slices and placements from a Server Edition -lgipp (driver 610.43.02 as stated; public code
# archive index id 55594212068), whose -lgip agrees except 4g at 95.12 GiB.
_RTX_PRO_6000 = GpuModel(
    key="RTX-PRO-6000-BLACKWELL",
    names=(
        "NVIDIA RTX PRO 6000 Blackwell Server Edition",
        "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
        "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition",
    ),
    device_ids=("0x2BB510DE", "0x2BB110DE"),
    memory_slices=12,
    compute_slices=4,
    profiles=(
        CatalogProfile("1g.24gb", 14, 1, 3, 24192, 4, (0, 3, 6, 9), 46),
        CatalogProfile("1g.24gb+me", 21, 1, 3, 24192, 1, (0, 3, 6, 9), 46),
        CatalogProfile("1g.24gb+gfx", 47, 1, 3, 24192, 4, (0, 3, 6, 9), 46),
        CatalogProfile("1g.24gb+me.all", 65, 1, 3, 24192, 1, (0, 3, 6, 9), 46),
        CatalogProfile("1g.24gb-me", 67, 1, 3, 24192, 4, (0, 3, 6, 9), 46),
        CatalogProfile("2g.48gb", 5, 2, 6, 48517, 2, (0, 6), 94),
        CatalogProfile("2g.48gb+gfx", 35, 2, 6, 48517, 2, (0, 6), 94),
        CatalogProfile("2g.48gb+me.all", 64, 2, 6, 48517, 1, (0, 6), 94),
        CatalogProfile("2g.48gb-me", 66, 2, 6, 48517, 2, (0, 6), 94),
        CatalogProfile("4g.96gb", 0, 4, 12, 97280, 1, (0,), 188),
        CatalogProfile("4g.96gb+gfx", 32, 4, 12, 97280, 1, (0,), 188),
    ),
    source=(
        f"{_GUIDE} (RTX PRO 6000 Blackwell table, all three editions); -lgip at 580.105.08, "
        f"{_FIXTURES}documented/rtx-pro-6000-blackwell-max-q/user-notes-580.105.08/; -lgipp of a Server "
        "Edition (public code archive index id 55594212068). 0x2BB510DE Server Edition (mig-parted "
        "config-default.yaml, bottlerocket-kernel-kit PR #300), 0x2BB110DE Workstation Edition; the "
        "Max-Q's device id was not found, so it is matched by name only."
    ),
)

# DGX Station A100 display GPU: no MIG. mig-parted's DGX Station examples disable MIG on it.
_DGX_DISPLAY = GpuModel(
    "DGX-DISPLAY", ("NVIDIA DGX Display",), ("0x1FB010DE",), memory_slices=0, compute_slices=0, profiles=(),
    source=(
        "shared/conformance/mig-parted/examples-dgx-station-80gb-config.yaml (device-filter 0x1FB010DE, "
        f"mig-enabled: false); name from {_FIXTURES}documented/a100-sxm4-80gb/dgx-station-kr-notes/."
    ),
    mig_capable=False,
)

MODELS: tuple[GpuModel, ...] = (
    _A100_40GB,
    _A100_80GB,
    _A30,
    _H100_SXM,
    _H100_PCIE,
    _H100_NVL,
    _H200,
    _RTX_PRO_6000,
    _DGX_DISPLAY,
)

_DEVICE_ID_RE = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{8})")
_WHITESPACE_RE = re.compile(r"\s+")


def normalize_device_id(value: str) -> str:
    """Return a PCI device id as ``0x`` plus 8 upper-case hex digits.

    Accepts ``0x20b010de``, ``20B010DE`` and ``0x20B010DE`` (surrounding whitespace is ignored). Anything
    else, such as a subsystem id suffix or a 4-digit device id, raises ValueError.
    """
    if not isinstance(value, str):
        raise ValueError(f"PCI device id must be a string like '0x20B010DE', got {type(value).__name__}")
    match = _DEVICE_ID_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"invalid PCI device id {value!r}: expected 8 hex digits (device then vendor), "
            "optionally prefixed with 0x, e.g. '0x20B010DE'"
        )
    return "0x" + match.group(1).upper()


def _normalize_name(name: str) -> str:
    return _WHITESPACE_RE.sub(" ", name).strip().casefold()


def _index() -> tuple[dict[str, GpuModel], dict[str, GpuModel]]:
    by_id: dict[str, GpuModel] = {}
    by_name: dict[str, GpuModel] = {}
    for model in MODELS:
        for device_id in model.device_ids:
            key = normalize_device_id(device_id)
            if key in by_id:
                raise RuntimeError(f"MIG catalog: device id {key} listed for {by_id[key].key} and {model.key}")
            by_id[key] = model
        for name in model.names:
            key = _normalize_name(name)
            if key in by_name:
                raise RuntimeError(f"MIG catalog: name {name!r} listed for {by_name[key].key} and {model.key}")
            by_name[key] = model
    return by_id, by_name


_BY_DEVICE_ID, _BY_NAME = _index()


def model_by_device_id(device_id: str) -> GpuModel | None:
    """Return the catalog model for a PCI device id, or None when the catalog does not know it.

    Raises ValueError when ``device_id`` is not a PCI device id (see normalize_device_id).
    """
    return _BY_DEVICE_ID.get(normalize_device_id(device_id))


def model_by_name(name: str) -> GpuModel | None:
    """Return the catalog model for a GPU name as nvidia-smi prints it (case and spacing are ignored)."""
    return _BY_NAME.get(_normalize_name(name))


def supported_profiles(model: GpuModel) -> list[dict[str, Any]]:
    """Return the model's profiles in the shape of the mig_info module's ``supported_profiles``."""
    result: list[dict[str, Any]] = []
    for profile in model.profiles:
        entry: dict[str, Any] = {
            "name": profile.name,
            "id": profile.id,
            "max_instances": profile.max_instances,
            "memory_mib": profile.memory_mib,
            "compute_slices": profile.compute_slices,
            "placements": [{"start": start, "size": profile.memory_slices} for start in profile.placements],
        }
        if profile.multiprocessors is not None:
            entry["multiprocessors"] = profile.multiprocessors
        result.append(entry)
    return result
