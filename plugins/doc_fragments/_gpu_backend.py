# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE doc fragment: how the modules read the GPUs."""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  backend:
    description:
      - How the GPUs are read.
      - V(nvml) uses NVML through the C(nvidia-ml-py) Python bindings (C(import pynvml)) on the node.
      - V(nvidia_smi) runs C(nvidia-smi) with the C locale and parses its output strictly; output it does not
        recognise is an error, never skipped.
      - V(auto) uses NVML when the bindings import and NVML initialises, and falls back to C(nvidia-smi)
        otherwise; RV(backend) and RV(backend_note) say what was used and why.
    type: str
    choices: [auto, nvml, nvidia_smi]
    default: auto
  nvidia_smi_path:
    description:
      - Path of the C(nvidia-smi) binary. By default it is looked up in E(PATH) and the usual system directories.
    type: path
requirements:
  - NVIDIA driver on the node (C(nvidia-smi) or C(libnvidia-ml.so.1)).
  - C(nvidia-ml-py) on the node for O(backend=nvml); optional for O(backend=auto).
"""
