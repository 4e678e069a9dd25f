# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real servers for integration tests, started and stopped by the tests on loopback.

- ``triton``: NVIDIA Triton Inference Server (the ``tritonserver`` binary shipped in the nvidia-pytriton
  wheel, CPU only, python-backend models) in a venv under ``build/triton-venv``.
- ``prometheus``: Debian's Prometheus 2.42 and promtool.
"""
from __future__ import annotations
