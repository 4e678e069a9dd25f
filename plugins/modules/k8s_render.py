#!/usr/bin/python
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# This is a virtual module, entirely implemented as an action plugin (plugins/action/k8s_render.py).

from __future__ import annotations

DOCUMENTATION = r"""
module: k8s_render
short_description: Write a component's Kubernetes objects and Helm values into a render directory the user owns
version_added: 0.1.0
description:
  - Render mode of role P(gpu_ops.mig_serving.k8s_objects#role); the role is its caller, a playbook rarely needs it directly.
  - Writes one file per object (C(NN-kind-name.yaml), in apply order) and one values file per Helm release
    (C(<release>.values.yaml)) under O(render_dir)/O(component)/, and indexes every release of every component in
    O(render_dir)/C(helm-releases.yaml).
  - The render directory belongs to the user. O(render_dir)/C(.gpu_ops-rendered) records, per component, the files a
    render wrote with the SHA-1 of what it wrote. A render removes only files that record lists and that still hold
    what was written; a file the user changed is kept (with a warning) and becomes theirs.
  - The record is read and checked before anything is written; a render refused for it, or for a path that is not
    a directory, changes nothing.
  - Runs on the controller, in the process of C(ansible-playbook), whatever the host's connection.
extends_documentation_fragment:
  - gpu_ops.mig_serving._attributes
  - gpu_ops.mig_serving._attributes.converge
options:
  render_dir:
    description:
      - The output directory, created when missing. A relative path is taken from the directory C(ansible-playbook)
        was started in.
    type: str
    required: true
  component:
    description: The directory of these files under O(render_dir), and their key in the record.
    type: str
    required: true
  manifests:
    description: Kubernetes objects, each with C(apiVersion), C(kind) and C(metadata.name), in apply order.
    type: list
    elements: raw
    default: []
  helm_releases:
    description: Helm releases, each with C(release), C(namespace), C(repository), C(chart), C(version) and C(values).
    type: list
    elements: raw
    default: []
  sensitive:
    description:
      - The objects carry secrets. Files are written C(0600) in a C(0700) directory, the record keeps no digest of
        them, and no diff is shown.
    type: bool
    default: false
attributes:
  diff_mode:
    details:
      - No diff for a sensitive component.
seealso:
  - module: kubernetes.core.k8s
"""

EXAMPLES = r"""
- name: Render two ConfigMaps for review
  gpu_ops.mig_serving.k8s_render:
    render_dir: build/manifests
    component: demo
    manifests:
      - {apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: demo}, data: {k: v}}
      - {apiVersion: v1, kind: ConfigMap, metadata: {name: b, namespace: demo}, data: {k: w}}
"""

RETURN = r"""
directory:
  description: The component's directory.
  returned: always
  type: str
  sample: /srv/render/triton
written:
  description: The files of the component written by this run (new, changed, or with a corrected mode).
  returned: always
  type: list
  elements: str
  sample: [01-deployment-triton.yaml]
removed:
  description: The files earlier renders wrote that this one no longer produces, removed.
  returned: always
  type: list
  elements: str
kept:
  description: The files earlier renders wrote that this one no longer produces and that changed since, kept.
  returned: always
  type: list
  elements: str
"""
