# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests for the PRIVATE nvidia-smi parsers, on real nvidia-smi output (../shared/fixtures/nvidia-smi)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._nvidia_smi import (
    COMMANDS,
    QUERY_FIELDS,
    GpuInfo,
    NvidiaSmiError,
    ProfileInfo,
    collect,
    parse_lci,
    parse_lgi,
    parse_lgip,
    parse_lgipp,
    parse_query_gpu,
)

FIXTURES = Path(__file__).resolve().parents[4] / "tests" / "data" / "shared" / "fixtures" / "nvidia-smi"
LOCAL_FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "nvidia_smi"

if not FIXTURES.is_dir():
    pytest.skip(
        f"the real nvidia-smi outputs are not available: {FIXTURES} is missing (it is the shared/ directory next to "
        "the repository checkout); these tests only make sense on them",
        allow_module_level=True,
    )

D = "documented/"
H200 = "h200-mig-disabled/"
A100_GUIDE = D + "a100-sxm4-40gb/mig-user-guide/"
A30_535 = D + "a30/user-session-535.183.01/"
RTX = D + "rtx-pro-6000-blackwell-max-q/user-notes-580.105.08/"
H200_UUID = "GPU-00000000-1111-2222-3333-444444444444"


def read(relative: str) -> str:
    return (FIXTURES / relative).read_text(encoding="utf-8")


def read_local(name: str) -> str:
    return (LOCAL_FIXTURES / name).read_text(encoding="utf-8")


def line_of(text: str, number: int) -> str:
    return text.split("\n")[number - 1]


def expect_error(text_or_call: Any, *fragments: str) -> NvidiaSmiError:
    """Run the call; assert NvidiaSmiError whose message contains every fragment (literally)."""
    with pytest.raises(NvidiaSmiError) as info:
        text_or_call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return info.value


# -- nvidia-smi mig -lgip -------------------------------------------------------------------------------------

# (name, id, free, total, memory_mib, compute_slices, SM, DEC, ENC, CE, JPEG, OFA), in printed order.
ProfileRow = tuple[str, int, int, int, int, int, int, int, int, int, int, int]

H200_PROFILES: list[ProfileRow] = [
    ("1g.18gb", 19, 7, 7, 16384, 1, 16, 1, 0, 1, 1, 0),
    ("1g.18gb+me", 20, 1, 1, 16384, 1, 16, 1, 0, 1, 1, 1),
    ("1g.35gb", 15, 4, 4, 33280, 1, 26, 1, 0, 1, 1, 0),
    ("2g.35gb", 14, 3, 3, 33280, 2, 32, 2, 0, 2, 2, 0),
    ("3g.71gb", 9, 2, 2, 71424, 3, 60, 3, 0, 3, 3, 0),
    ("4g.71gb", 5, 1, 1, 71424, 4, 64, 4, 0, 4, 4, 0),
    ("7g.141gb", 0, 1, 1, 143360, 7, 132, 7, 0, 8, 7, 1),
]
A100_40GB_PROFILES: list[ProfileRow] = [
    ("1g.5gb", 19, 7, 7, 4864, 1, 14, 0, 0, 1, 0, 0),
    ("1g.5gb+me", 20, 1, 1, 4864, 1, 14, 1, 0, 1, 1, 1),
    ("1g.10gb", 15, 4, 4, 9851, 1, 14, 1, 0, 1, 0, 0),
    ("2g.10gb", 14, 3, 3, 9851, 2, 28, 1, 0, 2, 0, 0),
    ("3g.20gb", 9, 2, 2, 19968, 3, 42, 2, 0, 3, 0, 0),
    ("4g.20gb", 5, 1, 1, 19968, 4, 56, 2, 0, 4, 0, 0),
    ("7g.40gb", 0, 1, 1, 40192, 7, 98, 5, 0, 7, 1, 1),
]

LGIP_EXPECTED: dict[str, dict[int, list[ProfileRow]]] = {
    # Our own capture: H200, driver 580.159.04, MIG disabled (the table is printed anyway), 81 columns.
    H200 + "nvidia-smi_mig_-lgip.txt": {0: H200_PROFILES},
    # R450: the narrow 76-column layout, no +me profiles yet.
    D + "a100-pcie-40gb/nvidia-smi_mig_-lgip_R450-era.txt": {
        0: [
            ("1g.5gb", 19, 7, 7, 4864, 1, 14, 0, 0, 1, 0, 0),
            ("2g.10gb", 14, 3, 3, 9984, 2, 28, 1, 0, 2, 0, 0),
            ("3g.20gb", 9, 2, 2, 20091, 3, 42, 2, 0, 3, 0, 0),
            ("4g.20gb", 5, 1, 1, 20091, 4, 56, 2, 0, 4, 0, 0),
            ("7g.40gb", 0, 1, 1, 40448, 7, 98, 5, 0, 7, 1, 1),
        ]
    },
    # R470+ (79 columns).
    A100_GUIDE + "nvidia-smi_mig_-lgip.txt": {0: A100_40GB_PROFILES},
    # A30 with every instance in use: Free 0.
    D + "a30/user-notes-pre-R525/nvidia-smi_mig_-lgip_4x1g.6gb-in-use.txt": {
        0: [
            ("1g.6gb", 14, 0, 4, 5949, 1, 14, 1, 0, 1, 0, 0),
            ("1g.6gb+me", 21, 0, 1, 5949, 1, 14, 1, 0, 1, 1, 1),
            ("2g.12gb", 5, 0, 2, 11971, 2, 28, 2, 0, 2, 0, 0),
            ("4g.24gb", 0, 0, 1, 24064, 4, 56, 4, 0, 4, 1, 1),
        ]
    },
    # A30, 535.183.01 (79 columns), with 2g.12gb+me.
    A30_535 + "nvidia-smi_mig_-lgip.txt": {
        0: [
            ("1g.6gb", 14, 4, 4, 5949, 1, 14, 1, 0, 1, 0, 0),
            ("1g.6gb+me", 21, 1, 1, 5949, 1, 14, 1, 0, 1, 1, 1),
            ("2g.12gb", 5, 2, 2, 11971, 2, 28, 2, 0, 2, 0, 0),
            ("2g.12gb+me", 6, 1, 1, 11971, 2, 28, 2, 0, 2, 1, 1),
            ("4g.24gb", 0, 1, 1, 24003, 4, 56, 4, 0, 4, 1, 1),
        ]
    },
    # B200 (pr187): an EXCERPT of the first 4 profiles, but cut right after a border. Structurally it is a
    # complete table, so it parses; truncation at a border cannot be told from a real 4-profile GPU.
    D + "b200/mig-parted-pr187/nvidia-smi_mig_-lgip_EXCERPT-first-4-profiles.txt": {
        0: [
            ("1g.23gb", 19, 7, 7, 20992, 1, 18, 1, 0, 2, 1, 0),
            ("1g.23gb+me", 20, 1, 1, 20992, 1, 18, 1, 0, 2, 1, 1),
            ("1g.45gb", 15, 4, 4, 45312, 1, 30, 1, 0, 2, 1, 0),
            ("2g.45gb", 14, 3, 3, 45312, 2, 36, 2, 0, 4, 2, 0),
        ]
    },
    # H100 NVL, 560.35.03: still the 79-column layout.
    D + "h100-nvl/azure-560.35.03/nvidia-smi_mig_-lgip.txt": {
        0: [
            ("1g.12gb", 19, 7, 7, 11008, 1, 16, 1, 0, 1, 1, 0),
            ("1g.12gb+me", 20, 1, 1, 11008, 1, 16, 1, 0, 1, 1, 1),
            ("1g.24gb", 15, 4, 4, 22139, 1, 26, 1, 0, 1, 1, 0),
            ("2g.24gb", 14, 3, 3, 22139, 2, 32, 2, 0, 2, 2, 0),
            ("3g.47gb", 9, 2, 2, 47493, 3, 60, 3, 0, 3, 3, 0),
            ("4g.47gb", 5, 1, 1, 47493, 4, 64, 4, 0, 4, 4, 0),
            ("7g.94gb", 0, 1, 1, 95355, 7, 132, 7, 0, 8, 7, 1),
        ]
    },
    # H100 PCIe, 525.125.06 (79 columns).
    D + "h100-pcie-80gb/scaleway-525.125.06/nvidia-smi_mig_-lgip.txt": {
        0: [
            ("1g.10gb", 19, 7, 7, 9851, 1, 14, 1, 0, 1, 1, 0),
            ("1g.10gb+me", 20, 1, 1, 9851, 1, 14, 1, 0, 1, 1, 1),
            ("1g.20gb", 15, 4, 4, 19968, 1, 14, 1, 0, 1, 1, 0),
            ("2g.20gb", 14, 3, 3, 19968, 2, 30, 2, 0, 2, 2, 0),
            ("3g.40gb", 9, 2, 2, 40192, 3, 46, 3, 0, 3, 3, 0),
            ("4g.40gb", 5, 1, 1, 40192, 4, 62, 4, 0, 4, 4, 0),
            ("7g.80gb", 0, 1, 1, 80896, 7, 114, 7, 0, 8, 7, 1),
        ]
    },
    # H100 PCIe, 570.169: the 81-column layout; memory values differ from 525 (9.75 vs 9.62 GiB).
    D + "h100-pcie-80gb/user-notes-570.169/nvidia-smi_mig_-lgip.txt": {
        0: [
            ("1g.10gb", 19, 7, 7, 9984, 1, 14, 1, 0, 1, 1, 0),
            ("1g.10gb+me", 20, 1, 1, 9984, 1, 14, 1, 0, 1, 1, 1),
            ("1g.20gb", 15, 4, 4, 20091, 1, 14, 1, 0, 1, 1, 0),
            ("2g.20gb", 14, 3, 3, 20091, 2, 30, 2, 0, 2, 2, 0),
            ("3g.40gb", 9, 2, 2, 40448, 3, 46, 3, 0, 3, 3, 0),
            ("4g.40gb", 5, 1, 1, 40448, 4, 62, 4, 0, 4, 4, 0),
            ("7g.80gb", 0, 1, 1, 81152, 7, 114, 7, 0, 8, 7, 1),
        ]
    },
    # RTX PRO 6000 Blackwell, 580.105.08: +me, +gfx, +me.all and -me profiles; encoders present.
    RTX + "nvidia-smi_mig_-lgip.txt": {
        0: [
            ("1g.24gb", 14, 4, 4, 24187, 1, 46, 1, 1, 1, 1, 0),
            ("1g.24gb+me", 21, 1, 1, 24187, 1, 46, 1, 1, 1, 1, 1),
            ("1g.24gb+gfx", 47, 4, 4, 24187, 1, 46, 1, 1, 1, 1, 0),
            ("1g.24gb+me.all", 65, 1, 1, 24187, 1, 46, 4, 4, 1, 4, 1),
            ("1g.24gb-me", 67, 4, 4, 24187, 1, 46, 0, 0, 1, 0, 0),
            ("2g.48gb", 5, 2, 2, 48517, 2, 94, 2, 2, 2, 2, 0),
            ("2g.48gb+gfx", 35, 2, 2, 48517, 2, 94, 2, 2, 2, 2, 0),
            ("2g.48gb+me.all", 64, 1, 1, 48517, 2, 94, 4, 4, 2, 4, 1),
            ("2g.48gb-me", 66, 2, 2, 48517, 2, 94, 0, 0, 2, 0, 0),
            ("4g.96gb", 0, 1, 1, 97280, 4, 188, 4, 4, 4, 4, 1),
            ("4g.96gb+gfx", 32, 1, 1, 97280, 4, 188, 4, 4, 4, 4, 1),
        ]
    },
}

LGIP_REJECTED: dict[str, tuple[str, ...]] = {
    # EXCERPT that lacks the final border: the last profile entry may be incomplete, so it must not parse.
    D + "b200/mig-parted-pr166/nvidia-smi_mig_-lgip_EXCERPT-first-4-profiles.txt": (
        "nvidia-smi mig -lgip: line 16: table is not closed",
        "'|                                                             4     2     0   |'",
    ),
    # EXCERPT starting mid-table (GPU 2's first profiles are missing): no title, so rejected rather than
    # returning a GPU 2 with 3 of its 7 profiles.
    D + "h200/mig-parted-issue120/nvidia-smi_mig_-lgip_multi-gpu_EXCERPT.txt": (
        "nvidia-smi mig -lgip: line 2: expected the table title 'GPU instance profiles:'",
        "'|   2  MIG 3g.71gb        9     2/2        69.50      No     60     3     0   |'",
    ),
}


def profile_row(profile: ProfileInfo) -> ProfileRow:
    return (
        profile["name"],
        profile["id"],
        profile["free_instances"],
        profile["max_instances"],
        profile["memory_mib"],
        profile["compute_slices"],
        profile["multiprocessors"],
        profile["decoders"],
        profile["encoders"],
        profile["copy_engines"],
        profile["jpeg_decoders"],
        profile["ofa"],
    )


@pytest.mark.parametrize("relative", sorted(LGIP_EXPECTED))
def test_parse_lgip_fixture(relative: str) -> None:
    parsed = parse_lgip(read(relative))
    assert {gpu: [profile_row(p) for p in profiles] for gpu, profiles in parsed.items()} == LGIP_EXPECTED[relative]
    for profiles in parsed.values():
        for profile in profiles:
            assert profile["p2p"] is False  # every fixture prints "No"
            assert profile["placements"] == []  # placements come from -lgipp


@pytest.mark.parametrize("relative", sorted(LGIP_REJECTED))
def test_parse_lgip_rejects_excerpt(relative: str) -> None:
    expect_error(lambda: parse_lgip(read(relative)), *LGIP_REJECTED[relative])


def test_parse_lgip_h200_full_shape() -> None:
    profile = parse_lgip(read(H200 + "nvidia-smi_mig_-lgip.txt"))[0][2]
    assert profile == {
        "name": "1g.35gb",
        "id": 15,
        "max_instances": 4,
        "free_instances": 4,
        "memory_mib": 33280,
        "compute_slices": 1,
        "multiprocessors": 26,
        "copy_engines": 1,
        "decoders": 1,
        "encoders": 0,
        "jpeg_decoders": 1,
        "ofa": 0,
        "p2p": False,
        "placements": [],
    }


def test_parse_lgip_h200_matches_nvml() -> None:
    """The same H200 read through NVML (nvml_profiles.json): every field equal, memory within 8 MiB."""
    nvml = json.loads(read(H200 + "nvml_profiles.json"))
    parsed = parse_lgip(read(H200 + "nvidia-smi_mig_-lgip.txt"))[0]
    assert len(parsed) == len(nvml["profiles"]) == 7
    for profile, raw in zip(parsed, nvml["profiles"]):
        assert raw["name"] == "MIG " + profile["name"]
        assert (
            profile["id"],
            profile["max_instances"],
            profile["compute_slices"],
            profile["multiprocessors"],
            profile["copy_engines"],
            profile["decoders"],
            profile["encoders"],
            profile["jpeg_decoders"],
            profile["ofa"],
            profile["p2p"],
        ) == (
            raw["id"],
            raw["instanceCount"],
            raw["sliceCount"],
            raw["multiprocessorCount"],
            raw["copyEngineCount"],
            raw["decoderCount"],
            raw["encoderCount"],
            raw["jpegCount"],
            raw["ofaCount"],
            bool(raw["isP2pSupported"]),
        )
        assert abs(profile["memory_mib"] - raw["memorySizeMB"]) <= 8


def test_parse_lgip_multi_gpu() -> None:
    """Several GPUs share one table (as in the mig-parted issue 120 excerpt): rows keyed by their GPU column."""
    h200 = read(H200 + "nvidia-smi_mig_-lgip.txt").rstrip("\n").split("\n")
    header, body = h200[:5], h200[5:]
    second = [re.sub(r"^\|   0 ", "|   1 ", line) for line in body]
    parsed = parse_lgip("\n".join([*header, *body, *second]) + "\n")
    assert sorted(parsed) == [0, 1]
    assert [profile_row(p) for p in parsed[1]] == H200_PROFILES


# -- nvidia-smi mig -lgipp ------------------------------------------------------------------------------------

Starts = tuple[list[int], int]
SEVEN_SLICE_PLACEMENTS: dict[int, Starts] = {
    19: ([0, 1, 2, 3, 4, 5, 6], 1),
    20: ([0, 1, 2, 3, 4, 5, 6], 1),
    15: ([0, 2, 4, 6], 2),
    14: ([0, 2, 4], 2),
    9: ([0, 4], 4),
    5: ([0], 4),
    0: ([0], 8),
}
LGIPP_EXPECTED: dict[str, dict[int, dict[int, Starts]]] = {
    H200 + "nvidia-smi_mig_-lgipp.txt": {0: SEVEN_SLICE_PLACEMENTS},
    A100_GUIDE + "nvidia-smi_mig_-lgipp.txt": {0: SEVEN_SLICE_PLACEMENTS},
    D + "h100-nvl/azure-560.35.03/nvidia-smi_mig_-lgipp.txt": {0: SEVEN_SLICE_PLACEMENTS},
    D + "h100-pcie-80gb/scaleway-525.125.06/nvidia-smi_mig_-lgipp.txt": {0: SEVEN_SLICE_PLACEMENTS},
    D + "a100-pcie-40gb/nvidia-smi_mig_-lgipp_R450-era.txt": {
        0: {19: ([0, 1, 2, 3, 4, 5, 6], 1), 14: ([0, 2, 4], 2), 9: ([0, 4], 4), 5: ([0], 4), 0: ([0], 8)}
    },
    D + "a30/user-notes-pre-R525/nvidia-smi_mig_-lgipp.txt": {0: {14: ([0, 1, 2, 3], 1), 21: ([0, 1, 2, 3], 1), 5: ([0, 2], 2), 0: ([0], 4)}},
    A30_535 + "nvidia-smi_mig_-lgipp.txt": {0: {14: ([0, 1, 2, 3], 1), 21: ([0, 1, 2, 3], 1), 5: ([0, 2], 2), 6: ([0, 2], 2), 0: ([0], 4)}},
}


@pytest.mark.parametrize("relative", sorted(LGIPP_EXPECTED))
def test_parse_lgipp_fixture(relative: str) -> None:
    expected = {
        gpu: {pid: [{"start": s, "size": size} for s in starts] for pid, (starts, size) in per_gpu.items()} for gpu, per_gpu in LGIPP_EXPECTED[relative].items()
    }
    parsed = parse_lgipp(read(relative))
    assert parsed == expected
    assert list(parsed[0]) == list(LGIPP_EXPECTED[relative][0])  # printed order kept


def test_parse_lgipp_h200_placements_of_named_profiles() -> None:
    parsed = parse_lgipp(read(H200 + "nvidia-smi_mig_-lgipp.txt"))[0]
    assert [(p["start"], p["size"]) for p in parsed[15]] == [(0, 2), (2, 2), (4, 2), (6, 2)]  # 1g.35gb
    assert parsed[0] == [{"start": 0, "size": 8}]  # 7g.141gb


# -- nvidia-smi mig -lgi --------------------------------------------------------------------------------------

# (GPU, GI id, profile id, profile, start, size), in printed order.
GiRow = tuple[int, int, int, str, int, int]
LGI_EXPECTED: dict[str, list[GiRow]] = {
    # Old 54-column layout (R450-R470).
    D + "a100-sxm4-40gb/cloud-native-docs-mig-k8s/nvidia-smi_mig_-lgi_7x1g.5gb.txt": [
        (0, gi, 19, "1g.5gb", start, 1) for gi, start in zip(range(7, 14), range(7))
    ],
    A100_GUIDE + "nvidia-smi_mig_-lgi_2-1-1-1-1-1.txt": [
        (0, 7, 19, "1g.5gb", 0, 1),
        (0, 8, 19, "1g.5gb", 1, 1),
        (0, 9, 19, "1g.5gb", 2, 1),
        (0, 10, 19, "1g.5gb", 3, 1),
        (0, 13, 19, "1g.5gb", 6, 1),
        (0, 5, 14, "2g.10gb", 4, 2),
    ],
    A100_GUIDE + "nvidia-smi_mig_-lgi_2x3g.20gb.txt": [(0, 1, 9, "3g.20gb", 4, 4), (0, 2, 9, "3g.20gb", 0, 4)],
    A100_GUIDE + "nvidia-smi_mig_-lgi_3-2-1-1.txt": [
        (0, 7, 19, "1g.5gb", 0, 1),
        (0, 8, 19, "1g.5gb", 1, 1),
        (0, 4, 14, "2g.10gb", 2, 2),
        (0, 2, 9, "3g.20gb", 4, 4),
    ],
    # 57-column layout. An EXCERPT (the source goes on with GPU 2+), but cut after a border: it parses, and
    # the two GPUs it does show are complete.
    D + "a100-sxm4-80gb/dcgm-issue138/nvidia-smi_mig_-lgi_multi-gpu_EXCERPT.txt": [
        (0, 9, 19, "1g.10gb", 2, 1),
        (0, 10, 19, "1g.10gb", 3, 1),
        (0, 3, 14, "2g.20gb", 0, 2),
        (0, 2, 9, "3g.40gb", 4, 4),
        (1, 13, 19, "1g.10gb", 2, 1),
        (1, 14, 19, "1g.10gb", 3, 1),
        (1, 5, 14, "2g.20gb", 0, 2),
        (1, 1, 9, "3g.40gb", 4, 4),
    ],
    D + "a30/user-notes-pre-R525/nvidia-smi_mig_-lgi_4x1g.6gb.txt": [(0, gi, 14, "1g.6gb", start, 1) for gi, start in zip(range(3, 7), range(4))],
    A30_535 + "01_nvidia-smi_mig_-lgi_no-instances.txt": [],  # "No GPU instances found: Not Found"
    A30_535 + "03_nvidia-smi_mig_-lgi.txt": [(0, 3, 14, "1g.6gb", 0, 1)],
    A30_535 + "07_nvidia-smi_mig_-lgi.txt": [(0, 3, 14, "1g.6gb", 0, 1), (0, 4, 14, "1g.6gb", 1, 1)],
    A30_535 + "09_nvidia-smi_mig_-lgi.txt": [
        (0, 3, 14, "1g.6gb", 0, 1),
        (0, 4, 14, "1g.6gb", 1, 1),
        (0, 2, 5, "2g.12gb", 2, 2),
    ],
    D + "h100-pcie-80gb/scaleway-525.125.06/nvidia-smi_mig_-lgi.txt": [
        (0, 7, 19, "1g.10gb", 0, 1),
        (0, 8, 19, "1g.10gb", 1, 1),
        (0, 9, 19, "1g.10gb", 2, 1),
        (0, 2, 9, "3g.40gb", 4, 4),
    ],
    H200 + "nvidia-smi_mig_-lgi.txt": [],  # "No MIG-enabled devices found."
}


def gi_rows(parsed: dict[int, list[Any]]) -> list[GiRow]:
    return [
        (gpu, gi["id"], gi["profile_id"], gi["profile"], gi["placement"]["start"], gi["placement"]["size"])
        for gpu, instances in parsed.items()
        for gi in instances
    ]


@pytest.mark.parametrize("relative", sorted(LGI_EXPECTED))
def test_parse_lgi_fixture(relative: str) -> None:
    assert gi_rows(parse_lgi(read(relative))) == LGI_EXPECTED[relative]


def test_parse_lgi_580_layout() -> None:
    """59-column R580 layout (synthetic, see tests/fixtures/nvidia_smi/README.md)."""
    parsed = parse_lgi(read_local("h200-580-synthetic_mig_-lgi.txt"))
    assert gi_rows(parsed) == [
        (0, 9, 19, "1g.18gb", 2, 1),
        (0, 10, 19, "1g.18gb", 3, 1),
        (0, 3, 14, "2g.35gb", 0, 2),
        (0, 2, 9, "3g.71gb", 4, 4),
    ]
    assert parsed[0][3] == {"id": 2, "profile_id": 9, "profile": "3g.71gb", "placement": {"start": 4, "size": 4}}


# -- nvidia-smi mig -lci --------------------------------------------------------------------------------------

# (GPU, GI id, CI id, profile id, profile), in printed order.
CiRow = tuple[int, int, int, int, str]
LCI_EXPECTED: dict[str, list[CiRow]] = {
    D + "a100-pcie-40gb/nvidia-smi_mig_-lci_7x1g.5gb.txt": [(0, gi, 0, 0, "1g.5gb") for gi in (7, 8, 9, 11, 12, 13, 14)],
    A100_GUIDE + "nvidia-smi_mig_-lci_-gi_1.txt": [(0, 1, ci, 0, "1c.3g.20gb") for ci in (0, 1, 2)],
}
# The `*-lci*` glob also matches the `-lcip` (compute instance *profiles*) outputs: another command, whose
# table has another title; parse_lci must refuse them instead of misreading their columns.
LCI_REJECTED: dict[str, tuple[str, ...]] = {
    path: ("nvidia-smi mig -lci: line 2: expected the table title 'Compute instances:'", "Compute instance profiles:")
    for path in (
        A100_GUIDE + "nvidia-smi_mig_-lcip_-gi_1.txt",
        A30_535 + "11_nvidia-smi_mig_-lcip_-gi_2.txt",
        A30_535 + "12_nvidia-smi_mig_-lcip_-gi_3.txt",
    )
}


def ci_rows(parsed: dict[int, list[Any]]) -> list[CiRow]:
    return [(gpu, ci["gpu_instance_id"], ci["id"], ci["profile_id"], ci["profile"]) for gpu, instances in parsed.items() for ci in instances]


@pytest.mark.parametrize("relative", sorted(LCI_EXPECTED))
def test_parse_lci_fixture(relative: str) -> None:
    assert ci_rows(parse_lci(read(relative))) == LCI_EXPECTED[relative]


@pytest.mark.parametrize("relative", sorted(LCI_REJECTED))
def test_parse_lci_rejects_lcip(relative: str) -> None:
    expect_error(lambda: parse_lci(read(relative)), *LCI_REJECTED[relative])


def test_parse_lci_placement_layout() -> None:
    """70-column layout with a Placement column (as in the 580.159.04 binary; synthetic values)."""
    parsed = parse_lci(read_local("h200-580-synthetic_mig_-lci.txt"))
    assert ci_rows(parsed) == [
        (0, 9, 0, 0, "1g.18gb"),
        (0, 10, 0, 0, "1g.18gb"),
        (0, 3, 0, 1, "2g.35gb"),
        (0, 2, 0, 0, "1c.3g.71gb"),
        (0, 2, 1, 1, "2c.3g.71gb"),
    ]
    assert parsed[0][4] == {"gpu_instance_id": 2, "id": 1, "profile_id": 1, "profile": "2c.3g.71gb"}


# -- every fixture is classified ------------------------------------------------------------------------------

QUERY_EXPECTED: dict[str, tuple[tuple[str, ...], list[dict[str, str]], str]] = {
    # file: (fields named in its command, rows, why parse_query_gpu(text) with QUERY_FIELDS refuses it)
    D + "a100-sxm4-40gb/cloud-native-docs-450.80.02/nvidia-smi_--query-gpu=mig.mode.current_--format=csv,noheader.txt": (
        ("mig.mode.current",),
        [{"mig.mode.current": "enabled"}],
        "line 1: 1 comma-separated fields, expected 8: 'Enabled'",
    ),
    A100_GUIDE + "nvidia-smi_-i_0_--query-gpu=pci.bus_id,mig.mode.current_--format=csv.txt": (
        ("pci.bus_id", "mig.mode.current"),
        [{"pci.bus_id": "00000000:36:00.0", "mig.mode.current": "enabled"}],
        "line 1: header does not name the requested fields",
    ),
    D + "a100-sxm4-80gb/cn-notes/nvidia-smi_-i_7_--query-gpu=mig.mode.current,mig.mode.pending_--format=csv.txt": (
        ("mig.mode.current", "mig.mode.pending"),
        [{"mig.mode.current": "enabled", "mig.mode.pending": "enabled"}],
        "line 1: header does not name the requested fields",
    ),
    D + "h100-pcie-80gb/scaleway-525.125.06/nvidia-smi_-i_0_--query-gpu=pci.bus_id,mig.mode.current_--format=csv.txt": (
        ("pci.bus_id", "mig.mode.current"),
        [{"pci.bus_id": "00000000:01:00.0", "mig.mode.current": "enabled"}],
        "line 1: header does not name the requested fields",
    ),
    D + "h100-pcie-80gb/user-notes-570.169/nvidia-smi_-i_0_--query-gpu=pci.bus_id,mig.mode.current_--format=csv.txt": (
        ("pci.bus_id", "mig.mode.current"),
        [{"pci.bus_id": "00000000:01:00.0", "mig.mode.current": "enabled"}],
        "line 1: header does not name the requested fields",
    ),
    # [N/A] before the RTX PRO's display mode was switched: MIG "unsupported".
    RTX + "nvidia-smi_--query-gpu=driver_version,name,mig.mode.current_NA-before-displaymode.txt": (
        ("driver_version", "name", "mig.mode.current"),
        [
            {
                "driver_version": "580.105.08",
                "name": "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition",
                "mig.mode.current": "unsupported",
            }
        ],
        "line 1: 3 comma-separated fields, expected 8",
    ),
    RTX + "nvidia-smi_-i_0_--query-gpu=mig.mode.current_--format=csv_after.txt": (
        ("mig.mode.current",),
        [{"mig.mode.current": "enabled"}],
        "line 1: header does not name the requested fields",
    ),
    RTX + "nvidia-smi_-i_0_--query-gpu=mig.mode.current_--format=csv_before.txt": (
        ("mig.mode.current",),
        [{"mig.mode.current": "disabled"}],
        "line 1: header does not name the requested fields",
    ),
    H200 + "nvidia-smi_--query-gpu.csv": (
        (
            "index",
            "name",
            "uuid",
            "pci.bus_id",
            "mig.mode.current",
            "mig.mode.pending",
            "memory.total",
            "driver_version",
        ),
        [
            {
                "index": "0",
                "name": "NVIDIA H200",
                "uuid": H200_UUID,
                "pci.bus_id": "00000000:00:06.0",
                "mig.mode.current": "disabled",
                "mig.mode.pending": "disabled",
                "memory.total": "143771 MiB",
                "driver_version": "580.159.04",
            }
        ],
        "line 1: header does not name the requested fields",
    ),
}

_KINDS = {
    "lgip": re.compile(r"_-lgip[_.]"),
    "lgipp": re.compile(r"_-lgipp[_.]"),
    "lgi": re.compile(r"_-lgi[_.]"),
    "lci": re.compile(r"_-lcip?[_.]"),
    "query": re.compile(r"--query-gpu"),
}


@pytest.mark.parametrize(
    ("kind", "classified"),
    [
        ("lgip", {*LGIP_EXPECTED, *LGIP_REJECTED}),
        ("lgipp", set(LGIPP_EXPECTED)),
        ("lgi", set(LGI_EXPECTED)),
        ("lci", {*LCI_EXPECTED, *LCI_REJECTED}),
        ("query", set(QUERY_EXPECTED)),
    ],
)
def test_every_fixture_is_classified(kind: str, classified: set[str]) -> None:
    """A new fixture fails here until it gets expected values or a documented rejection."""
    found = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*") if _KINDS[kind].search(p.name)}
    assert found == classified


@pytest.mark.parametrize("relative", sorted(QUERY_EXPECTED))
def test_parse_query_gpu_fixture(relative: str) -> None:
    fields, rows, _rejection = QUERY_EXPECTED[relative]
    assert parse_query_gpu(read(relative), fields) == rows


@pytest.mark.parametrize("relative", sorted(QUERY_EXPECTED))
def test_parse_query_gpu_fixture_rejected_for_other_fields(relative: str) -> None:
    """None of these outputs is of collect()'s own query: with QUERY_FIELDS each one is refused."""
    expect_error(lambda: parse_query_gpu(read(relative)), "nvidia-smi --query-gpu=index,name,uuid,", QUERY_EXPECTED[relative][2])


# -- nvidia-smi --query-gpu with QUERY_FIELDS --------------------------------------------------------------


def h200_query_line() -> str:
    """The collect() query line of our H200, from the real capture (csv + Device Id and Sub System Id of nvidia-smi -q)."""
    fields, _rows, _expected = QUERY_EXPECTED[H200 + "nvidia-smi_--query-gpu.csv"]
    row = parse_query_gpu(read(H200 + "nvidia-smi_--query-gpu.csv"), fields)[0]
    details = read(H200 + "nvidia-smi_-q.txt")
    device = re.search(r"^\s+Device Id\s+: (0x[0-9A-F]{8})$", details, re.MULTILINE)
    subsystem = re.search(r"^\s+Sub System Id\s+: (0x[0-9A-F]{8})$", details, re.MULTILINE)
    assert device is not None
    assert subsystem is not None
    modes = {"disabled": "Disabled", "enabled": "Enabled"}
    values = [row["index"], row["name"], row["uuid"], row["pci.bus_id"], device[1], subsystem[1]]
    return ", ".join([*values, modes[row["mig.mode.current"]], modes[row["mig.mode.pending"]]]) + "\n"


def test_h200_query_line_built_from_capture() -> None:
    assert h200_query_line() == f"0, NVIDIA H200, {H200_UUID}, 00000000:00:06.0, 0x233510DE, 0x18BF10DE, Disabled, Disabled\n"


def test_parse_query_gpu_rows_and_header() -> None:
    text = (
        "index, name, uuid, pci.bus_id, pci.device_id, pci.sub_device_id, mig.mode.current, mig.mode.pending\n"
        "0, NVIDIA A100-SXM4-80GB, GPU-00000001-1111-2222-3333-444444444444, 00000000:07:00.0, 0x20b210de, 0x147f10de, Enabled, Disabled\n"
        "1, DGX Display, GPU-00000002-1111-2222-3333-444444444444, 0000:c1:00.0, 0x1FB010DE, [N/A], [N/A], [N/A]\n"
    )
    assert parse_query_gpu(text) == [
        {
            "index": "0",
            "name": "NVIDIA A100-SXM4-80GB",
            "uuid": "GPU-00000001-1111-2222-3333-444444444444",
            "pci.bus_id": "00000000:07:00.0",
            "pci.device_id": "0x20B210DE",
            "pci.sub_device_id": "0x147F10DE",
            "mig.mode.current": "enabled",
            "mig.mode.pending": "disabled",
        },
        {
            "index": "1",
            "name": "DGX Display",
            "uuid": "GPU-00000002-1111-2222-3333-444444444444",
            "pci.bus_id": "00000000:C1:00.0",
            "pci.device_id": "0x1FB010DE",
            "pci.sub_device_id": "",
            "mig.mode.current": "unsupported",
            "mig.mode.pending": "unsupported",
        },
    ]


QUERY_GOOD = f"0, NVIDIA H200, {H200_UUID}, 00000000:00:06.0, 0x233510DE, 0x18BF10DE, Disabled, Disabled"


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (QUERY_GOOD.replace(", Disabled, Disabled", ", Disabled"), "7 comma-separated fields, expected 8"),
        (QUERY_GOOD + ", 580.159.04", "9 comma-separated fields, expected 8"),
        (QUERY_GOOD.replace("0x233510DE", "0x2335"), "pci.device_id: expected a PCI device id like '0x233510DE', got '0x2335'"),
        (QUERY_GOOD.replace("0x233510DE", "233510DE"), "pci.device_id: expected a PCI device id"),
        (QUERY_GOOD.replace("0x18BF10DE", "0x18BF"), "pci.sub_device_id: expected a PCI subsystem id like '0x18BF10DE', got '0x18BF'"),
        (QUERY_GOOD.replace("0x18BF10DE", "N/A"), "pci.sub_device_id: expected a PCI subsystem id like '0x18BF10DE', got 'N/A'"),
        (QUERY_GOOD.replace(H200_UUID, "MIG-00000000-1111-2222-3333-444444444444"), "uuid: expected a UUID"),
        (QUERY_GOOD.replace("00000000:00:06.0", "00:06.0"), "pci.bus_id: expected a PCI bus id"),
        (QUERY_GOOD.replace("Disabled, Disabled", "On, Disabled"), "mig.mode.current: expected one of Enabled, Disabled"),
        (QUERY_GOOD.replace("0, NVIDIA", "x, NVIDIA"), "index: expected a GPU index, got 'x'"),
        (QUERY_GOOD.replace("NVIDIA H200", ""), "name: expected a GPU name"),
        ("No devices were found", "1 comma-separated fields, expected 8"),
    ],
)
def test_parse_query_gpu_rejects_bad_line(line: str, fragment: str) -> None:
    text = QUERY_GOOD + "\n" + line + "\n"
    error = expect_error(lambda: parse_query_gpu(text), "nvidia-smi --query-gpu=" + ",".join(QUERY_FIELDS), "line 2: ", fragment)
    assert error.line_number == 2
    assert error.line == line


@pytest.mark.parametrize("printed", ["[N/A]", "[Not Supported]"])
def test_parse_query_gpu_subsystem_id_not_available(printed: str) -> None:
    """A GPU or driver that does not report the PCI subsystem id gives an empty string, not an error."""
    (row,) = parse_query_gpu(QUERY_GOOD.replace("0x18BF10DE", printed) + "\n")
    assert row["pci.sub_device_id"] == ""
    assert row["pci.device_id"] == "0x233510DE"


def test_parse_query_gpu_rejects_duplicate_index_and_empty_output() -> None:
    expect_error(lambda: parse_query_gpu(QUERY_GOOD + "\n" + QUERY_GOOD + "\n"), "line 2: GPU index 0 listed twice")
    expect_error(lambda: parse_query_gpu("\n"), "printed nothing")
    header = "index, name, uuid, pci.bus_id, pci.device_id, pci.sub_device_id, mig.mode.current, mig.mode.pending\n"
    expect_error(lambda: parse_query_gpu(header), "header but no GPU line")


# -- structural errors ----------------------------------------------------------------------------------------

H200_LGIP = H200 + "nvidia-smi_mig_-lgip.txt"


def edit_lines(text: str, number: int, replacement: list[str]) -> str:
    """Replace line ``number`` (1-based) by ``replacement`` (empty: delete it)."""
    lines = text.split("\n")
    lines[number - 1 : number] = replacement
    return "\n".join(lines)


def test_lgip_garbled_row() -> None:
    text = read(H200_LGIP)
    bad = line_of(text, 6).replace("7/7", "7-7")
    error = expect_error(lambda: parse_lgip(edit_lines(text, 6, [bad])), "nvidia-smi mig -lgip: line 6: unrecognised profile row", repr(bad))
    assert (error.command, error.line_number, error.line) == ("nvidia-smi mig -lgip", 6, bad)


def test_lgip_missing_continuation_line() -> None:
    text = edit_lines(read(H200_LGIP), 10, [])  # the continuation of 1g.18gb+me (row on line 9)
    expect_error(
        lambda: parse_lgip(text),
        "nvidia-smi mig -lgip: line 10: missing the continuation line (CE JPEG OFA) of the profile row on line 9",
        "'+-------",
    )


def test_lgip_garbled_continuation_line() -> None:
    text = read(H200_LGIP)
    bad = line_of(text, 7).replace("1     1     0", "1     1      ")
    expect_error(lambda: parse_lgip(edit_lines(text, 7, [bad])), "line 7: unrecognised continuation line", repr(bad))


@pytest.mark.parametrize(
    ("number", "inserted", "fragment"),
    [
        (1, "Warning: persistence mode is disabled on device 00000000:00:06.0.", "line 1: expected the top border"),
        (12, "WARNING: infoROM is corrupted at gpu 0000:00:06.0", "line 12: expected a table row or a '+---+' border, got a line that is not a table row"),
        (27, "All done.", "line 27: expected a table row or a '+---+' border"),
        (12, "", "line 12: expected a table row or a '+---+' border, got a line that is not a table row: ''"),
        (6, "|" + " " * 79 + "|", "line 6: unrecognised profile row"),
    ],
)
def test_lgip_unknown_line(number: int, inserted: str, fragment: str) -> None:
    text = read(H200_LGIP)
    lines = text.split("\n")
    lines.insert(number - 1, inserted)
    expect_error(lambda: parse_lgip("\n".join(lines)), "nvidia-smi mig -lgip: " + fragment)


@pytest.mark.parametrize(("number", "old", "new"), [(3, "DEC", "NVD"), (4, "JPEG", "JPG "), (2, "profiles:", "profile: ")])
def test_lgip_unknown_header(number: int, old: str, new: str) -> None:
    text = read(H200_LGIP)
    bad = line_of(text, number).replace(old, new)
    what = "expected the table title 'GPU instance profiles:'" if number == 2 else "unrecognised column header"
    expect_error(lambda: parse_lgip(edit_lines(text, number, [bad])), f"nvidia-smi mig -lgip: line {number}: {what}", repr(bad))


def test_lgip_width_change_is_rejected() -> None:
    text = read(H200_LGIP)
    bad = line_of(text, 9).replace("|   0 ", "|   0  ")  # one column wider than the table
    expect_error(lambda: parse_lgip(edit_lines(text, 9, [bad])), "line 9: line is 82 characters wide, the table 81", repr(bad))


def test_lgip_semantic_checks() -> None:
    text = read(H200_LGIP)
    duplicate = line_of(text, 9).replace("20 ", "19 ")
    expect_error(lambda: parse_lgip(edit_lines(text, 9, [duplicate])), "line 9: profile ID 19 listed twice for GPU 0")
    overfull = line_of(text, 6).replace("7/7", "8/7")
    expect_error(lambda: parse_lgip(edit_lines(text, 6, [overfull])), "line 6: free instances 8 exceed the total 7")
    bad_name = line_of(text, 6).replace("MIG 1g.18gb  ", "MIG 1x.18gb  ")
    expect_error(lambda: parse_lgip(edit_lines(text, 6, [bad_name])), "line 6: unrecognised profile name '1x.18gb'")
    third = line_of(text, 7)
    expect_error(lambda: parse_lgip(edit_lines(text, 7, [third, third])), "line 8: unexpected third line in a profile entry")
    expect_error(lambda: parse_lgip(edit_lines(text, 6, [line_of(text, 8)])), "line 6: border without a table row before it")


def test_lgip_empty_table_and_empty_output() -> None:
    head = "\n".join(read(H200_LGIP).split("\n")[:5]) + "\n"
    expect_error(lambda: parse_lgip(head), "nvidia-smi mig -lgip: line 5: table has no rows")
    expect_error(lambda: parse_lgip(""), "nvidia-smi mig -lgip: printed nothing")
    expect_error(lambda: parse_lgip("\n".join(read(H200_LGIP).split("\n")[:3])), "line 3: output ends early")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("GPU  0 Profile ID 19 Placements: {0,1,2,3,4,5,6}", "unrecognised line"),
        ("GPU  0 Profile ID 19 Placements: {}:1", "unrecognised line"),
        ("GPU  0 Profile ID 5 Placements: {0}:4", "label 'Placements' does not fit 1 placement(s)"),
        ("GPU  0 Profile ID  9 Placement : {0,4}:4", "label 'Placement' does not fit 2 placement(s)"),
        ("GPU  0 Profile ID 19 Placements: {0,0}:1", "placement start listed twice"),
        ("GPU  0 Profile ID 19 Placements: {0,1}:0", "placement size must be at least 1"),
        ("GPU  0 Profile ID 20 Placements: {0,1,2,3,4,5,6}:1", "profile ID 20 listed twice for GPU 0"),
    ],
)
def test_lgipp_rejects_bad_line(line: str, fragment: str) -> None:
    text = read(H200 + "nvidia-smi_mig_-lgipp.txt")
    error = expect_error(lambda: parse_lgipp(text + line + "\n"), f"nvidia-smi mig -lgipp: line 8: {fragment}", repr(line))
    assert error.line_number == 8


def test_lgi_and_lci_garbled_rows() -> None:
    lgi = read(A100_GUIDE + "nvidia-smi_mig_-lgi_2x3g.20gb.txt")
    bad = line_of(lgi, 6).replace("4:4", "4/4")
    expect_error(lambda: parse_lgi(edit_lines(lgi, 6, [bad])), "nvidia-smi mig -lgi: line 6: unrecognised GPU instance row", repr(bad))
    duplicate = line_of(lgi, 8).replace(" 2   ", " 1   ")
    expect_error(lambda: parse_lgi(edit_lines(lgi, 8, [duplicate])), "line 8: GPU instance ID 1 listed twice for GPU 0")
    header = line_of(lgi, 3).replace("Placement ", "Placemnt  ")
    expect_error(lambda: parse_lgi(edit_lines(lgi, 3, [header])), "nvidia-smi mig -lgi: line 3: unrecognised column header")

    lci = read_local("h200-580-synthetic_mig_-lci.txt")
    no_placement = line_of(lci, 7).replace("0:1", "   ")
    expect_error(
        lambda: parse_lci(edit_lines(lci, 7, [no_placement])),
        "nvidia-smi mig -lci: line 7: unrecognised compute instance row (expected GPU, GI ID, MIG name, profile ID, instance ID, start:size)",
    )
    old = read(A100_GUIDE + "nvidia-smi_mig_-lci_-gi_1.txt")
    with_placement = line_of(old, 7)[:-8] + "0:1    |"
    expect_error(
        lambda: parse_lci(edit_lines(old, 7, [with_placement])),
        "line 7: unrecognised compute instance row (expected GPU, GI ID, MIG name, profile ID, instance ID)",
    )
    twice = line_of(old, 9).replace("0         1", "0         0")
    expect_error(lambda: parse_lci(edit_lines(old, 9, [twice])), "line 9: compute instance 0 of GPU instance 1 listed twice for GPU 0")


# -- empty states ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parser", "message"),
    [
        (parse_lgip, "No MIG-enabled devices found."),
        (parse_lgip, "No MIG-supported devices found."),
        (parse_lgipp, "No MIG-enabled devices found."),
        (parse_lgi, "No MIG-enabled devices found."),
        (parse_lgi, "No GPU instances found: Not Found"),
        (parse_lci, "No MIG-enabled devices found."),
        (parse_lci, "No GPU instances found: Not Found"),
        (parse_lci, "No compute instances found: Not Found"),
    ],
)
def test_empty_states(parser: Any, message: str) -> None:
    assert parser(message + "\n") == {}


@pytest.mark.parametrize(
    ("parser", "message", "command"),
    [
        (parse_lgip, "No GPU instances found: Not Found", "nvidia-smi mig -lgip"),  # the message of another command
        (parse_lgi, "No compute instances found: Not Found", "nvidia-smi mig -lgi"),
        (parse_lgi, "No MIG-enabled devices found", "nvidia-smi mig -lgi"),  # no full stop: not the real message
        (parse_lci, "No compute instances found: Unknown Error", "nvidia-smi mig -lci"),
        (parse_lgipp, "No devices were found", "nvidia-smi mig -lgipp"),
    ],
)
def test_not_quite_empty_states_are_rejected(parser: Any, message: str, command: str) -> None:
    expect_error(lambda: parser(message + "\n"), f"{command}: line 1: ", repr(message))


# -- collect --------------------------------------------------------------------------------------------------

QUERY = tuple(COMMANDS["query"])
LGIP = ("mig", "-lgip")
LGIPP = ("mig", "-lgipp")
LGI = ("mig", "-lgi")
LCI = ("mig", "-lci")


class FakeNvidiaSmi:
    """Answers collect()'s commands from a table; records the calls; fails on anything else."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        key = tuple(argv)
        self.calls.append(key)
        if key not in self.answers:
            pytest.fail(f"collect() ran an unexpected command: {argv}")
        return self.answers[key]


def ok(text: str) -> tuple[int, str, str]:
    return (0, text, "")


def full_profile(row: ProfileRow, placements: Starts) -> ProfileInfo:
    name, pid, free, total, mem, slices, sm, dec, enc, ce, jpeg, ofa = row
    starts, size = placements
    return {
        "name": name,
        "id": pid,
        "max_instances": total,
        "free_instances": free,
        "memory_mib": mem,
        "compute_slices": slices,
        "multiprocessors": sm,
        "copy_engines": ce,
        "decoders": dec,
        "encoders": enc,
        "jpeg_decoders": jpeg,
        "ofa": ofa,
        "p2p": False,
        "placements": [{"start": s, "size": size} for s in starts],
    }


def test_commands() -> None:
    assert QUERY_FIELDS == (
        "index",
        "name",
        "uuid",
        "pci.bus_id",
        "pci.device_id",
        "pci.sub_device_id",
        "mig.mode.current",
        "mig.mode.pending",
    )
    assert COMMANDS == {
        "query": [
            "--query-gpu=index,name,uuid,pci.bus_id,pci.device_id,pci.sub_device_id,mig.mode.current,mig.mode.pending",
            "--format=csv,noheader",
        ],
        "lgip": ["mig", "-lgip"],
        "lgipp": ["mig", "-lgipp"],
        "lgi": ["mig", "-lgi"],
        "lci": ["mig", "-lci"],
    }


def test_collect_h200_mig_disabled() -> None:
    """Our H200 capture: 3 commands, -lgi/-lci not run, full GpuInfo."""
    fake = FakeNvidiaSmi(
        {
            QUERY: ok(h200_query_line()),
            LGIP: ok(read(H200 + "nvidia-smi_mig_-lgip.txt")),
            LGIPP: ok(read(H200 + "nvidia-smi_mig_-lgipp.txt")),
        }
    )
    expected: GpuInfo = {
        "index": 0,
        "name": "NVIDIA H200",
        "uuid": H200_UUID,
        "pci_bus_id": "00000000:00:06.0",
        "pci_device_id": "0x233510DE",
        "pci_subsystem_id": "0x18BF10DE",
        "mig_mode_current": "disabled",
        "mig_mode_pending": "disabled",
        "gpu_instances": [],
        "compute_instances": [],
        "supported_profiles": [full_profile(row, SEVEN_SLICE_PLACEMENTS[row[1]]) for row in H200_PROFILES],
    }
    assert collect(fake) == [expected]
    assert fake.calls == [QUERY, LGIP, LGIPP]
    profiles = {p["name"]: p for p in expected["supported_profiles"]}
    assert profiles["1g.18gb"]["memory_mib"] == 16384
    assert profiles["1g.35gb"]["memory_mib"] == 33280
    assert profiles["1g.35gb"]["placements"] == [{"start": s, "size": 2} for s in (0, 2, 4, 6)]
    assert profiles["7g.141gb"]["placements"] == [{"start": 0, "size": 8}]


def test_collect_h200_mig_disabled_real_lgi_not_needed() -> None:
    """Even if -lgi would answer "No MIG-enabled devices found." (as it does on that H200), it is not run."""
    fake = FakeNvidiaSmi(
        {
            QUERY: ok(h200_query_line()),
            LGIP: ok(read(H200 + "nvidia-smi_mig_-lgip.txt")),
            LGIPP: ok(read(H200 + "nvidia-smi_mig_-lgipp.txt")),
            LGI: ok(read(H200 + "nvidia-smi_mig_-lgi.txt")),
            LCI: ok(read(H200 + "nvidia-smi_mig_-lgi.txt")),
        }
    )
    collect(fake)
    assert LGI not in fake.calls
    assert LCI not in fake.calls


def test_collect_a100_mig_enabled() -> None:
    """A100 40GB from the MIG user guide: 2 x 3g.20gb GIs, 3 CIs in GI 1."""
    query = "0, NVIDIA A100-SXM4-40GB, GPU-00000001-1111-2222-3333-444444444444, 00000000:36:00.0, 0x20B010DE, 0x134F10DE, Enabled, Enabled\n"
    fake = FakeNvidiaSmi(
        {
            QUERY: ok(query),
            LGIP: ok(read(A100_GUIDE + "nvidia-smi_mig_-lgip.txt")),
            LGIPP: ok(read(A100_GUIDE + "nvidia-smi_mig_-lgipp.txt")),
            LGI: ok(read(A100_GUIDE + "nvidia-smi_mig_-lgi_2x3g.20gb.txt")),
            LCI: ok(read(A100_GUIDE + "nvidia-smi_mig_-lci_-gi_1.txt")),
        }
    )
    (gpu,) = collect(fake)
    assert fake.calls == [QUERY, LGIP, LGIPP, LGI, LCI]
    assert (gpu["index"], gpu["mig_mode_current"], gpu["mig_mode_pending"]) == (0, "enabled", "enabled")
    assert (gpu["pci_device_id"], gpu["pci_subsystem_id"]) == ("0x20B010DE", "0x134F10DE")
    assert gpu["gpu_instances"] == [  # sorted by id, like the NVML backend
        {"id": 1, "profile_id": 9, "profile": "3g.20gb", "placement": {"start": 4, "size": 4}},
        {"id": 2, "profile_id": 9, "profile": "3g.20gb", "placement": {"start": 0, "size": 4}},
    ]
    assert gpu["compute_instances"] == [
        {"gpu_instance_id": 1, "id": 0, "profile_id": 0, "profile": "1c.3g.20gb"},
        {"gpu_instance_id": 1, "id": 1, "profile_id": 0, "profile": "1c.3g.20gb"},
        {"gpu_instance_id": 1, "id": 2, "profile_id": 0, "profile": "1c.3g.20gb"},
    ]
    assert gpu["supported_profiles"] == [full_profile(row, SEVEN_SLICE_PLACEMENTS[row[1]]) for row in A100_40GB_PROFILES]


def test_collect_h200_mig_enabled_580_layouts() -> None:
    query = f"0, NVIDIA H200, {H200_UUID}, 00000000:00:06.0, 0x233510DE, 0x18BF10DE, Enabled, Enabled\n"
    fake = FakeNvidiaSmi(
        {
            QUERY: ok(query),
            LGIP: ok(read(H200 + "nvidia-smi_mig_-lgip.txt")),
            LGIPP: ok(read(H200 + "nvidia-smi_mig_-lgipp.txt")),
            LGI: ok(read_local("h200-580-synthetic_mig_-lgi.txt")),
            LCI: ok(read_local("h200-580-synthetic_mig_-lci.txt")),
        }
    )
    (gpu,) = collect(fake)
    assert [(gi["id"], gi["profile"]) for gi in gpu["gpu_instances"]] == [(2, "3g.71gb"), (3, "2g.35gb"), (9, "1g.18gb"), (10, "1g.18gb")]
    assert [(ci["gpu_instance_id"], ci["id"], ci["profile"]) for ci in gpu["compute_instances"]] == [
        (2, 0, "1c.3g.71gb"),
        (2, 1, "2c.3g.71gb"),
        (3, 0, "2g.35gb"),
        (9, 0, "1g.18gb"),
        (10, 0, "1g.18gb"),
    ]


def test_collect_dgx_station_display_gpu_and_empty_states_with_rc_6() -> None:
    """GPU 1 cannot do MIG ([N/A]): empty lists. No GIs yet: -lgi/-lci answer with rc 6 and are empty."""
    query = (
        "0, NVIDIA A100-SXM4-40GB, GPU-00000001-1111-2222-3333-444444444444, 00000000:07:00.0, 0x20B010DE, 0x134F10DE, Enabled, Enabled\n"
        "1, DGX Display, GPU-00000002-1111-2222-3333-444444444444, 00000000:C1:00.0, 0x1FB010DE, [N/A], [N/A], [N/A]\n"
    )
    fake = FakeNvidiaSmi(
        {
            QUERY: ok(query),
            LGIP: ok(read(A100_GUIDE + "nvidia-smi_mig_-lgip.txt")),
            LGIPP: ok(read(A100_GUIDE + "nvidia-smi_mig_-lgipp.txt")),
            LGI: (6, read(A30_535 + "01_nvidia-smi_mig_-lgi_no-instances.txt"), ""),
            LCI: (6, "No compute instances found: Not Found\n", ""),
        }
    )
    gpus = collect(fake)
    assert [g["index"] for g in gpus] == [0, 1]
    assert [p["id"] for p in gpus[0]["supported_profiles"]] == [19, 20, 15, 14, 9, 5, 0]
    assert (gpus[0]["gpu_instances"], gpus[0]["compute_instances"]) == ([], [])
    assert gpus[1] == {
        "index": 1,
        "name": "DGX Display",
        "uuid": "GPU-00000002-1111-2222-3333-444444444444",
        "pci_bus_id": "00000000:C1:00.0",
        "pci_device_id": "0x1FB010DE",
        "pci_subsystem_id": "",
        "mig_mode_current": "unsupported",
        "mig_mode_pending": "unsupported",
        "gpu_instances": [],
        "compute_instances": [],
        "supported_profiles": [],
    }


def test_collect_sorts_by_index() -> None:
    query = (
        "1, DGX Display, GPU-00000002-1111-2222-3333-444444444444, 00000000:C1:00.0, 0x1FB010DE, [N/A], [N/A], [N/A]\n"
        f"0, NVIDIA H200, {H200_UUID}, 00000000:00:06.0, 0x233510DE, 0x18BF10DE, Disabled, Disabled\n"
    )
    fake = FakeNvidiaSmi({QUERY: ok(query), LGIP: ok(read(H200_LGIP)), LGIPP: ok(read(H200 + "nvidia-smi_mig_-lgipp.txt"))})
    assert [g["index"] for g in collect(fake)] == [0, 1]


def test_collect_only_queries_when_no_gpu_supports_mig() -> None:
    query = (
        "0, NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition, GPU-00000003-1111-2222-3333-444444444444, "
        "00000000:01:00.0, 0x2BB410DE, 0x204C10DE, [N/A], [N/A]\n"
    )
    fake = FakeNvidiaSmi({QUERY: ok(query)})
    (gpu,) = collect(fake)
    assert fake.calls == [QUERY]
    assert (gpu["mig_mode_current"], gpu["supported_profiles"]) == ("unsupported", [])


def test_collect_old_driver_lists_no_profiles_while_mig_disabled() -> None:
    fake = FakeNvidiaSmi(
        {
            QUERY: ok(h200_query_line()),
            LGIP: (6, "No MIG-enabled devices found.\n", ""),
            LGIPP: (6, "No MIG-enabled devices found.\n", ""),
        }
    )
    (gpu,) = collect(fake)
    assert gpu["supported_profiles"] == []
    assert fake.calls == [QUERY, LGIP, LGIPP]


def test_collect_nonzero_rc_fails() -> None:
    failure = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
    fake = FakeNvidiaSmi({QUERY: (9, "", failure + "\n\n")})
    error = expect_error(lambda: collect(fake), "nvidia-smi " + " ".join(COMMANDS["query"]), "failed with rc 9", failure)
    assert error.command == (
        "nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,pci.device_id,pci.sub_device_id,mig.mode.current,mig.mode.pending"
        " --format=csv,noheader"
    )


@pytest.mark.parametrize(
    ("answer", "fragments"),
    [
        ((6, "No devices were found\n", ""), ("nvidia-smi mig -lgip: failed with rc 6: No devices were found",)),
        ((2, "No MIG-enabled devices found.\n", ""), ("nvidia-smi mig -lgip: failed with rc 2: No MIG-enabled devices found.",)),
        ((0, "", "Insufficient Permissions\n"), ("nvidia-smi mig -lgip: printed nothing on stdout; stderr: Insufficient Permissions",)),
        ((255, "", ""), ("nvidia-smi mig -lgip: failed with rc 255: no output",)),
    ],
)
def test_collect_lgip_failures(answer: tuple[int, str, str], fragments: tuple[str, ...]) -> None:
    fake = FakeNvidiaSmi({QUERY: ok(h200_query_line()), LGIP: answer})
    expect_error(lambda: collect(fake), *fragments)


def test_collect_empty_state_on_stderr_with_rc_6() -> None:
    fake = FakeNvidiaSmi({QUERY: ok(h200_query_line()), LGIP: (6, "", "No MIG-enabled devices found.\n"), LGIPP: (6, "", "No MIG-enabled devices found.\n")})
    assert collect(fake)[0]["supported_profiles"] == []


def _h200_answers(**changes: tuple[int, str, str]) -> dict[tuple[str, ...], tuple[int, str, str]]:
    answers = {
        QUERY: ok(f"0, NVIDIA H200, {H200_UUID}, 00000000:00:06.0, 0x233510DE, 0x18BF10DE, Enabled, Enabled\n"),
        LGIP: ok(read(H200_LGIP)),
        LGIPP: ok(read(H200 + "nvidia-smi_mig_-lgipp.txt")),
        LGI: ok(read_local("h200-580-synthetic_mig_-lgi.txt")),
        LCI: ok(read_local("h200-580-synthetic_mig_-lci.txt")),
    }
    keys = {"query": QUERY, "lgip": LGIP, "lgipp": LGIPP, "lgi": LGI, "lci": LCI}
    answers.update({keys[name]: value for name, value in changes.items()})
    return answers


LGIPP_TEXT = "GPU  0 Profile ID 19 Placements: {0,1,2,3,4,5,6}:1\n"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        (
            {"lgipp": ok(read(H200 + "nvidia-smi_mig_-lgipp.txt").replace("GPU  0 Profile ID  0 Placement : {0}:8\n", ""))},
            "nvidia-smi mig -lgipp: no placements for GPU 0 profile ID 0 (7g.141gb)",
        ),
        (
            {"lgipp": ok(read(H200 + "nvidia-smi_mig_-lgipp.txt") + "GPU  0 Profile ID 99 Placement : {0}:8\n")},
            "nvidia-smi mig -lgipp: placements for GPU 0 profile ID(s) [99] that -lgip does not list",
        ),
        (
            {"lgipp": ok(read(H200 + "nvidia-smi_mig_-lgipp.txt") + LGIPP_TEXT.replace("GPU  0", "GPU  1"))},
            "nvidia-smi mig -lgipp: placements for GPU(s) [1] that -lgip does not list",
        ),
        ({"lgip": ok(read(H200_LGIP).replace("|   0  MIG", "|   3  MIG"))}, "nvidia-smi mig -lgip: lists GPU 3, which --query-gpu did not report"),
        (
            {"lgip": ok("No MIG-enabled devices found.\n"), "lgipp": ok("No MIG-enabled devices found.\n")},
            "nvidia-smi mig -lgip: lists no profiles for GPU 0, which has MIG enabled",
        ),
        (
            {"lci": ok(read_local("h200-580-synthetic_mig_-lci.txt").replace("|   0     10 ", "|   0     11 "))},
            "nvidia-smi mig -lci: GPU 0 compute instance 0 is in GPU instance 11, which -lgi does not list",
        ),
        (
            {"lgi": ok(read_local("h200-580-synthetic_mig_-lgi.txt").replace("19        9", "18        9"))},
            "nvidia-smi mig -lgi: GPU 0 GPU instance 9 has profile ID 18, not listed by -lgip",
        ),
        (
            {"lgi": ok(read_local("h200-580-synthetic_mig_-lgi.txt").replace("|   0  MIG 3g", "|   1  MIG 3g"))},
            "nvidia-smi mig -lgi: lists instances on GPU 1, which was not reported by --query-gpu",
        ),
    ],
)
def test_collect_inconsistent_outputs(changes: dict[str, tuple[int, str, str]], fragment: str) -> None:
    expect_error(lambda: collect(FakeNvidiaSmi(_h200_answers(**changes))), fragment)


def test_collect_instances_on_gpu_without_mig_enabled() -> None:
    query = (
        f"0, NVIDIA H200, {H200_UUID}, 00000000:00:06.0, 0x233510DE, 0x18BF10DE, Enabled, Enabled\n"
        "1, NVIDIA H200, GPU-00000001-1111-2222-3333-444444444444, 00000000:00:07.0, 0x233510DE, 0x18BF10DE, Disabled, Disabled\n"
    )
    lgip = read(H200_LGIP).rstrip("\n").split("\n")
    lgip += [re.sub(r"^\|   0 ", "|   1 ", line) for line in lgip[5:]]
    lgipp = read(H200 + "nvidia-smi_mig_-lgipp.txt")
    lgi = read_local("h200-580-synthetic_mig_-lgi.txt").replace("|   0  MIG 3g", "|   1  MIG 3g")
    answers = _h200_answers(query=ok(query), lgip=ok("\n".join(lgip) + "\n"), lgipp=ok(lgipp + lgipp.replace("GPU  0", "GPU  1")), lgi=ok(lgi))
    expect_error(lambda: collect(FakeNvidiaSmi(answers)), "nvidia-smi mig -lgi: lists instances on GPU 1, which has MIG disabled")
