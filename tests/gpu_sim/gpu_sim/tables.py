# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Per-model facts and per-driver table layouts, copied from real nvidia-smi output.

Paths below are relative to ``tests/data/shared/fixtures/nvidia-smi/`` (``SOURCES.md`` there says where
each file comes from). Nothing in this module is invented: every number is in one of those files.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DRIVER = "580.159.04"  # h200-mig-disabled/nvidia-smi_-q.txt ("Driver Version")


@dataclass(frozen=True)
class GiProfile:
    """One row of ``nvidia-smi mig -lgip`` plus its ``-lgipp`` placements (memory slices)."""

    id: int
    name: str  # without the "MIG " prefix, e.g. "1g.5gb+me"
    instances: int  # Total of Free/Total
    memory_gib: str  # printed as is, e.g. "4.75"
    p2p: bool
    sm: int
    dec: int
    enc: int
    ce: int
    jpeg: int
    ofa: int
    starts: tuple[int, ...]
    size: int

    @property
    def compute_slices(self) -> int:
        """The ``<n>g`` of the name: compute slices of the GPU instance."""
        return int(self.name.split("g.", 1)[0])


@dataclass(frozen=True)
class GpuModel:
    key: str  # what `gpu-sim init --model` accepts
    name: str  # --query-gpu=name and -L
    device_id: str  # --query-gpu=pci.device_id (PCI device + vendor), what mig-parted's device-filter matches
    sub_device_id: str  # --query-gpu=pci.sub_device_id
    memory_total_mib: int  # --query-gpu=memory.total
    memory_slices: int  # size of the placement space (the 7g profile's placement size)
    profiles: tuple[GiProfile, ...]  # in -lgip order
    bus_ids: tuple[str, ...]  # PCI bus ids of GPUs 0.. (simulator choice, see README)

    def profile(self, profile_id: int) -> GiProfile | None:
        return next((p for p in self.profiles if p.id == profile_id), None)

    def profile_by_name(self, name: str) -> GiProfile | None:
        return next((p for p in self.profiles if p.name == name), None)


_ALL7 = (0, 1, 2, 3, 4, 5, 6)

# documented/a100-sxm4-40gb/mig-user-guide/nvidia-smi_mig_-lgip.txt and nvidia-smi_mig_-lgipp.txt (MIG User Guide);
# name, device id, subsystem id and memory.total from documented/a100-sxm4-40gb/netdata-510.47.03/nvidia-smi_-q_-x.xml
# (<product_name>, <pci_device_id>, <pci_sub_system_id>, <fb_memory_usage><total>). Bus ids: a DGX A100's eight GPUs;
# GPU 0 at 07:00.0 as in documented/a100-sxm4-40gb/mig-user-guide/nvidia-smi_-i_0_-mig_1_dgx.txt.
A100_SXM4_40GB = GpuModel(
    key="A100-SXM4-40GB",
    name="NVIDIA A100-SXM4-40GB",
    device_id="0x20B010DE",
    sub_device_id="0x134F10DE",
    memory_total_mib=40960,
    memory_slices=8,
    profiles=(
        GiProfile(19, "1g.5gb", 7, "4.75", False, 14, 0, 0, 1, 0, 0, _ALL7, 1),
        GiProfile(20, "1g.5gb+me", 1, "4.75", False, 14, 1, 0, 1, 1, 1, _ALL7, 1),
        GiProfile(15, "1g.10gb", 4, "9.62", False, 14, 1, 0, 1, 0, 0, (0, 2, 4, 6), 2),
        GiProfile(14, "2g.10gb", 3, "9.62", False, 28, 1, 0, 2, 0, 0, (0, 2, 4), 2),
        GiProfile(9, "3g.20gb", 2, "19.50", False, 42, 2, 0, 3, 0, 0, (0, 4), 4),
        GiProfile(5, "4g.20gb", 1, "19.50", False, 56, 2, 0, 4, 0, 0, (0,), 4),
        GiProfile(0, "7g.40gb", 1, "39.25", False, 98, 5, 0, 7, 1, 1, (0,), 8),
    ),
    bus_ids=tuple(f"00000000:{bus}:00.0" for bus in ("07", "0F", "47", "4E", "87", "90", "B7", "BD")),
)

# h200-mig-disabled/ (a real H200, driver 580.159.04): nvidia-smi_mig_-lgip.txt, nvidia-smi_mig_-lgipp.txt; name, bus id
# of GPU 0, memory.total from nvidia-smi_--query-gpu.csv; device and subsystem id from nvidia-smi_-q.txt. The capture
# is a VM with one GPU at 00:06.0; further GPUs continue that numbering (simulator choice).
H200 = GpuModel(
    key="H200",
    name="NVIDIA H200",
    device_id="0x233510DE",
    sub_device_id="0x18BF10DE",
    memory_total_mib=143771,
    memory_slices=8,
    profiles=(
        GiProfile(19, "1g.18gb", 7, "16.00", False, 16, 1, 0, 1, 1, 0, _ALL7, 1),
        GiProfile(20, "1g.18gb+me", 1, "16.00", False, 16, 1, 0, 1, 1, 1, _ALL7, 1),
        GiProfile(15, "1g.35gb", 4, "32.50", False, 26, 1, 0, 1, 1, 0, (0, 2, 4, 6), 2),
        GiProfile(14, "2g.35gb", 3, "32.50", False, 32, 2, 0, 2, 2, 0, (0, 2, 4), 2),
        GiProfile(9, "3g.71gb", 2, "69.75", False, 60, 3, 0, 3, 3, 0, (0, 4), 4),
        GiProfile(5, "4g.71gb", 1, "69.75", False, 64, 4, 0, 4, 4, 0, (0,), 4),
        GiProfile(0, "7g.141gb", 1, "140.00", False, 132, 7, 0, 8, 7, 1, (0,), 8),
    ),
    bus_ids=tuple(f"00000000:00:{slot:02X}.0" for slot in range(6, 6 + 16)),
)

MODELS: dict[str, GpuModel] = {m.key: m for m in (A100_SXM4_40GB, H200)}

# Compute instance profile ID of the compute instance that spans its whole GPU instance, by compute slices
# (NVML_COMPUTE_INSTANCE_PROFILE_<n>_SLICE). Seen in the fixtures: 1g -> 0, 2g -> 1 (a30 ...08_nvidia-smi_mig_-cgi_5_-C),
# 3g -> 2 (a100-sxm4-40gb/mig-user-guide/nvidia-smi_mig_-cgi_9,3g.20gb_-C.txt); 4 and 7 follow the NVML constants.
FULL_CI_PROFILE_ID = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}


def gi_id_for(placement_start: int, placement_size: int, memory_slices: int) -> int:
    """GPU instance ID the driver gives a placement: a binary tree over the memory slices.

    0 is the whole GPU, 1-2 the halves, 3-6 the quarters, 7-14 the single slices. It reproduces every GI ID in
    documented/a100-sxm4-40gb/mig-user-guide (-cgi and -lgi outputs except the older -lgi_2x3g.20gb, from another
    session), documented/a100-pcie-40gb (-cgi 19 x7), h100-pcie-80gb/scaleway-525.125.06 and GPU 0 of
    a100-sxm4-80gb/dcgm-issue138 (all-balanced). Real drivers do not always follow it (GPU 1 of that issue).
    """
    return memory_slices // placement_size - 1 + placement_start // placement_size


# -- table layouts ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Frame and column anchors of the -lgip, -lgi and -lci tables of one driver branch.

    Anchors are character columns: ``_l`` is where a left-aligned value starts, ``_r`` where a right-aligned
    value ends (exclusive). They were measured on the fixtures named in ``LAYOUTS``.
    """

    lgip_head: tuple[str, ...]
    lgip_id_r: int  # profile ID; everything right of the name column shifts with it
    lgi_head: tuple[str, ...]
    lgi_pid_r: int
    lgi_id_r: int
    lgi_place_l: int
    lci_head: tuple[str, ...]
    lci_place_l: int | None  # None: no Placement column

    @property
    def lgip_shift(self) -> int:
        return self.lgip_id_r - 27


_LGIP_81 = (
    "+-------------------------------------------------------------------------------+",
    "| GPU instance profiles:                                                        |",
    "| GPU   Name               ID    Instances   Memory     P2P    SM    DEC   ENC  |",
    "|                                Free/Total   GiB              CE    JPEG  OFA  |",
    "|===============================================================================|",
)
_LGIP_79 = (
    "+-----------------------------------------------------------------------------+",
    "| GPU instance profiles:                                                      |",
    "| GPU   Name             ID    Instances   Memory     P2P    SM    DEC   ENC  |",
    "|                              Free/Total   GiB              CE    JPEG  OFA  |",
    "|=============================================================================|",
)
_LGI_59 = (
    "+---------------------------------------------------------+",
    "| GPU instances:                                          |",
    "| GPU   Name               Profile  Instance   Placement  |",
    "|                            ID       ID       Start:Size |",
    "|=========================================================|",
)
_LGI_57 = (
    "+-------------------------------------------------------+",
    "| GPU instances:                                        |",
    "| GPU   Name             Profile  Instance   Placement  |",
    "|                          ID       ID       Start:Size |",
    "|=======================================================|",
)
_LCI_70 = (
    "+--------------------------------------------------------------------+",
    "| Compute instances:                                                 |",
    "| GPU     GPU       Name             Profile   Instance   Placement  |",
    "|       Instance                       ID        ID       Start:Size |",
    "|         ID                                                         |",
    "|====================================================================|",
)
_LCI_57 = (
    "+-------------------------------------------------------+",
    "| Compute instances:                                    |",
    "| GPU     GPU       Name             Profile   Instance |",
    "|       Instance                       ID        ID     |",
    "|         ID                                            |",
    "|=======================================================|",
)

LAYOUTS: dict[str, Layout] = {
    # -lgip: h200-mig-disabled/nvidia-smi_mig_-lgip.txt (580.159.04). -lgi / -lci: the 580.159.04 templates in
    # ../../../fixtures/nvidia_smi/ (tests/fixtures/nvidia_smi/README.md: frame from the 580 binary, rows synthetic).
    "580.159.04": Layout(_LGIP_81, 29, _LGI_59, 31, 40, 50, _LCI_70, 61),
    # -lgip: documented/a30/user-session-535.183.01/nvidia-smi_mig_-lgip.txt (the A100 guide's table has the same
    # layout); -lgi: documented/a30/user-session-535.183.01/03_nvidia-smi_mig_-lgi.txt. No 535 -lci capture exists:
    # the R470-era layout of documented/a100-sxm4-40gb/mig-user-guide/nvidia-smi_mig_-lci_-gi_1.txt is used.
    "535.183.01": Layout(_LGIP_79, 27, _LGI_57, 29, 38, 48, _LCI_57, None),
}
