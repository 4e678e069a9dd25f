# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE doc fragment: how the modules read the GPUs."""
from __future__ import annotations


class ModuleDocFragment:
    # the options (a string literal: ansible-test's yamllint reads it as one)
    DOCUMENTATION = r"""
options:
  backend:
    description:
      - How the GPUs are read.
      - V(nvml) uses NVML through the C(nvidia-ml-py) Python bindings (C(import pynvml)) on the node.
      - V(nvidia_smi) runs C(nvidia-smi) with the C locale and parses its output strictly; output it does not
        recognise is an error, never skipped.
      - V(auto) uses NVML when the bindings import and NVML initialises, and falls back to C(nvidia-smi)
        otherwise; the returned C(backend) and C(backend_note) say what was used and why.
    type: str
    choices: [auto, nvml, nvidia_smi]
    default: auto
  nvidia_smi_path:
    description:
      - Path of the C(nvidia-smi) binary. By default it is looked up in E(PATH) and the usual system directories.
    type: path
  timeout:
    description:
      - Seconds each command the module runs may take (every C(nvidia-smi) call, and any other command it runs), and,
        with NVML, the whole NVML read. From 1 to 3600.
      - On expiry the module fails naming the command (or the NVML call still pending) and the limit, and the command
        is killed. A hung NVML read does not fall back to C(nvidia-smi) with O(backend=auto), which would hang on the
        same driver.
      - The default is a generous bound, not a measurement. Each C(nvidia-smi) listing returns in about a second on a
        node with persistence mode on; a minute means the driver is hung.
      - The bound is a C(SIGALRM) in the module process, so it holds even when the command is stuck in the kernel
        (C(nvidia-smi) in an uninterruptible driver call). The module stops waiting, sends it C(SIGKILL) and reports.
        An NVML call stuck in the kernel keeps the module's process from exiting until the driver answers, so bound
        the task with the C(timeout) task keyword too where that matters.
    type: int
    default: 60
requirements:
  - NVIDIA driver on the node (C(nvidia-smi) or C(libnvidia-ml.so.1)).
  - C(nvidia-ml-py) on the node for O(backend=nvml); optional for O(backend=auto).
"""

    # Merged into a module's RETURN when its RETURN extends this fragment (ansible-core >= 2.20).
    RETURN = r"""
backend:
  description: The backend that read the GPUs (V(nvml) or V(nvidia_smi)).
  returned: whenever the GPUs are read (by M(gpu_ops.mig_serving.mig_node_state) only when its C(gpus) option is true)
  type: str
  sample: nvml
backend_note:
  description: Why O(backend=auto) fell back to C(nvidia-smi); empty otherwise.
  returned: whenever C(backend) is
  type: str
  sample: ""
"""
