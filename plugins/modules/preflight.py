#!/usr/bin/python
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# This is a virtual module, entirely implemented as an action plugin (plugins/action/preflight.py).

from __future__ import annotations

DOCUMENTATION = r"""
module: preflight
short_description: Check a role's variables before anything is written, reporting every problem at once
version_added: 0.1.0
description:
  - The first tasks of the collection's roles; usable in any role that has a C(meta/argument_specs.yml).
  - With O(rules), checks the variables of the role running the task against the types and choices of its
    argument spec (entry point C(main), as M(ansible.builtin.validate_argument_spec) does), then against the
    formats and ranges of O(rules), and fails with one message listing every problem.
  - With O(checks), fails with the messages of the checks that fail, each once. Use it for what depends on
    several variables, after the task with O(rules), so that a variable of the wrong type is reported by its type.
  - Runs on the controller, in the process of C(ansible-playbook); changes nothing.
extends_documentation_fragment:
  - gpu_ops.mig_serving._attributes
  - gpu_ops.mig_serving._attributes.info_module
options:
  rules:
    description:
      - Variable name to rule, in the rule language of the filter P(gpu_ops.mig_serving.input_problems#filter)
        (for example V(namespace), V(int:1..), V(url), V(subdomain?)).
      - Every name must be an option of the role's argument spec. A variable the spec refuses is not checked again
        by its rule.
    type: dict
  checks:
    description:
      - Checks across variables, each a mapping with C(fail) (a boolean, usually a template) and C(msg), the message
        when it fails, naming the variables to fix.
    type: list
    elements: dict
notes:
  - Exactly one of O(rules) and O(checks) is given.
seealso:
  - module: ansible.builtin.validate_argument_spec
  - plugin: gpu_ops.mig_serving.input_problems
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Check the variables' types, choices, formats and ranges
  gpu_ops.mig_serving.preflight:
    rules:
      nginx_lb_namespace: namespace
      nginx_lb_replicas: "int:1.."
      nginx_lb_read_timeout: nginx_time

- name: Check what depends on several variables
  gpu_ops.mig_serving.preflight:
    checks:
      - fail: "{{ nginx_lb_http_port == nginx_lb_grpc_port }}"
        msg: "nginx_lb_http_port and nginx_lb_grpc_port must differ, both are {{ nginx_lb_http_port }}"
"""

RETURN = r"""
problems:
  description: One message per problem, each naming the variable; empty when every check passed.
  returned: always
  type: list
  elements: str
  sample: ["triton_namespace: 'Triton' is not an RFC 1123 DNS label"]
"""
