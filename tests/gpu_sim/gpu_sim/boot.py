# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What happens to the GPUs when the machine boots (``gpu-sim boot``, run by gpu-sim-boot.service).

A reboot resets every GPU: a pending MIG mode becomes current (the passthrough case of
``documented/a100-sxm4-40gb/mig-user-guide/nvidia-smi_-i_0_-mig_1_passthrough-pending.txt``: "Reboot the system ...
to make MIG mode effective"), and GPU and compute instances do not survive it (they live in the driver; that is why
mig-parted is re-applied at boot). Processes that held a GPU are gone.
"""
from __future__ import annotations

import sys

from . import state as st


def main(argv: list[str]) -> int:
    if argv:
        print("usage: gpu-sim boot", file=sys.stderr)
        return 2
    try:
        with st.session(write=True) as state:
            changes = st.boot(state)
    except st.StateMissing as error:
        print(f"gpu-sim boot: no state file {error.args[0]}; nothing to do", file=sys.stderr)
        return 0
    for line in changes or ["no change"]:
        print(f"gpu-sim boot: {line}")
    return 0
