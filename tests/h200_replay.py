# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test equipment: an ``nvidia-smi`` that replays our real H200 capture (MIG disabled) for the read-only listings the
modules run, and refuses everything else, so a playbook run against it can change nothing."""
from __future__ import annotations

import stat
import sys
from pathlib import Path

CAPTURE = Path(__file__).resolve().parent / "data" / "shared" / "fixtures" / "nvidia-smi" / "h200-mig-disabled"
QUERY = "0, NVIDIA H200, GPU-00000000-1111-2222-3333-444444444444, 00000000:00:06.0, 0x233510DE, 0x18BF10DE, Disabled, Disabled"


def write_replay_nvidia_smi(path: Path) -> Path:
    """Write the replaying nvidia-smi at ``path`` (executable) and return it."""
    path.write_text(f"""#!{sys.executable}
import sys
args = sys.argv[1:]
if args and args[0].startswith("--query-gpu="):
    print({QUERY!r})
elif args == ["mig", "-lgip"]:
    sys.stdout.write(open({str(CAPTURE / "nvidia-smi_mig_-lgip.txt")!r}).read())
elif args == ["mig", "-lgipp"]:
    sys.stdout.write(open({str(CAPTURE / "nvidia-smi_mig_-lgipp.txt")!r}).read())
else:
    sys.exit("replay nvidia-smi: refusing " + " ".join(args))
""")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path
