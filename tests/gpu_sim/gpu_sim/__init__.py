# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""GPU simulator: test equipment standing in for ``nvidia-smi`` and ``nvidia-mig-parted`` (see ../README.md).

Python 3.11 standard library only; it never imports the collection's code.
"""
