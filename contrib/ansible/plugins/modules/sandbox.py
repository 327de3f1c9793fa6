#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sandbox maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: sandbox
short_description: Converge or remove a sandbox with the installed C(sandbox) binary
version_added: "0.1.0"
description:
  - Runs C(sandbox setup) (or C(sandbox setup --disable)) on the managed host and reports what changed.
  - The options mirror the keys of the config file C(/etc/sandbox/NAME.toml); an option left unset is taken
    from that file when it exists, else the tool's default. An option given here overrides the file.
  - Check mode runs C(sandbox plan --format json --detailed-exitcode) and changes nothing.
  - Diff mode shows the plan (the changes each step makes).
  - A failure carries the tool's cause and fix.
options:
  name:
    description: Name of the sandbox; every object name derives from it.
    type: str
    default: sandbox
  state:
    description: C(present) builds or converges the sandbox; C(absent) takes it away (C(setup --disable)).
    type: str
    choices: [present, absent]
    default: present
  config:
    description: Read the settings from this file instead of C(/etc/sandbox/NAME.toml).
    type: path
  policy:
    description: Egress policy, a preset (C(strict), C(default), C(permissive)) or a path to a policy file.
    type: str
  sandbox_ip:
    description: Address of the sandbox end of the veth pair, or C(auto).
    type: str
  host_ip:
    description: Address of the host end of the veth pair; the sidecar listens here. Or C(auto).
    type: str
  subnet:
    description: The veth pair's subnet, C(auto) (a free /30 leased from O(subnet_pool), the default) or a CIDR.
    type: str
  subnet_pool:
    description: Where O(subnet=auto) takes /30s from (default C(10.200.0.0/16)).
    type: str
  sandbox_home:
    description: Home directory of the sandbox user (default C(/home/NAME)).
    type: path
  openclaw_port:
    description: Port of the OpenClaw gateway inside the sandbox.
    type: int
  dns:
    description: Resolvers the sandbox may use (IPv4 addresses), or C(host) alone for the host's upstream resolvers.
    type: list
    elements: str
  no_auto_pair:
    description: Do not pre-pair the sidecar.
    type: bool
  no_host_networking:
    description: Leave the host's firewall and sysctls alone.
    type: bool
  no_guardrail:
    description: Close the guardrail proxy port.
    type: bool
  no_systemd:
    description: Write unit files but do not talk to systemd.
    type: bool
  agent_bin:
    description: The OpenClaw program the agent unit starts.
    type: path
  sidecar_bin:
    description: The DefenseClaw gateway program the sidecar unit starts.
    type: path
  sidecar_user:
    description: The admin user the sidecar runs as; C(root) for a dynamic user.
    type: str
  purge:
    description: With I(state=absent), also remove the user, group and home, if setup created them.
    type: bool
    default: false
  root:
    description: Take every file path under this directory instead of C(/) (for tests and image builders).
    type: path
    default: /
  binary:
    description: The C(sandbox) program to run.
    type: path
    default: /usr/local/sbin/sandbox
notes:
  - Needs root on the managed host (C(become)).
  - The module runs the binary; it does not reimplement it. See C(sandbox man).
author:
  - sandbox maintainers (@sandbox)
'''

EXAMPLES = r'''
- name: A strict sandbox, with settings from /etc/sandbox/ci.toml where not given here
  sandbox.sandbox.sandbox:
    name: ci
    policy: strict
  become: true

- name: What would change (check mode), with the plan as a diff
  sandbox.sandbox.sandbox:
    name: ci
  check_mode: true
  diff: true

- name: Take it away
  sandbox.sandbox.sandbox:
    name: ci
    state: absent
'''

RETURN = r'''
changes:
  description: The steps that changed (or, in check mode, would change), each with its changes.
  returned: always
  type: list
  elements: dict
  sample: [{"step": "veth", "changes": ["create veth pair sandbox0"]}]
events:
  description: The JSON events of the run (C(--json)), or the plan's changes in check mode.
  returned: always
  type: list
  elements: dict
cmd:
  description: The command that was run.
  returned: always
  type: list
  elements: str
exit_code:
  description: Its exit code (in check mode, 2 when changes are pending, as C(plan --detailed-exitcode) says).
  returned: always
  type: int
cause:
  description: On failure, what went wrong, as the tool says it.
  returned: failure
  type: str
fix:
  description: On failure, what to do about it, as the tool says it.
  returned: failure
  type: str
'''

import json

from ansible.module_utils.basic import AnsibleModule

# Options passed as flags when set (None: the config file or the default decides).
VALUE_KEYS = ('policy', 'sandbox_ip', 'host_ip', 'subnet', 'subnet_pool', 'sandbox_home', 'openclaw_port', 'agent_bin',
              'sidecar_bin', 'sidecar_user', 'config')
BOOL_KEYS = ('no_auto_pair', 'no_host_networking', 'no_guardrail', 'no_systemd')


def flag(key):
    return '--' + key.replace('_', '-')


def setting_flags(params):
    out = ['--name', params['name'], '--root', params['root']]
    for key in VALUE_KEYS:
        if params[key] is not None:
            out += [flag(key), str(params[key])]
    if params['dns'] is not None:
        out += ['--dns', ','.join(params['dns'])]
    for key in BOOL_KEYS:
        if params[key] is not None:
            out.append('%s=%s' % (flag(key), 'true' if params[key] else 'false'))
    return out


def json_lines(text):
    out = []
    for line in (text or '').splitlines():
        line = line.strip()
        if line.startswith('{'):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def fail(module, cmd, rc, stdout, stderr):
    error = None
    for ev in json_lines(stdout):
        if ev.get('event') == 'error':
            error = ev
    if error is None:
        msg = (stderr or stdout or 'sandbox failed').strip()
        module.fail_json(msg=msg, cmd=cmd, rc=rc, exit_code=rc, stdout=stdout, stderr=stderr, changes=[], events=[])
    msg = error.get('cause', '')
    if error.get('fix'):
        msg += ' (fix: %s)' % error['fix']
    module.fail_json(msg=msg, cause=error.get('cause'), fix=error.get('fix'), cmd=cmd, rc=rc,
                     exit_code=error.get('exit_code'), stdout=stdout, stderr=stderr, changes=[], events=[])


def plan_text(changes):
    lines = []
    for c in changes:
        for change in c.get('changes', []):
            lines.append('%-14s %s' % (c.get('step', ''), change))
    return '\n'.join(lines) + ('\n' if lines else '')


def main():
    spec = dict(
        name=dict(type='str', default='sandbox'),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        config=dict(type='path'),
        policy=dict(type='str'),
        sandbox_ip=dict(type='str'),
        host_ip=dict(type='str'),
        subnet=dict(type='str'),
        subnet_pool=dict(type='str'),
        sandbox_home=dict(type='path'),
        openclaw_port=dict(type='int'),
        dns=dict(type='list', elements='str'),
        no_auto_pair=dict(type='bool'),
        no_host_networking=dict(type='bool'),
        no_guardrail=dict(type='bool'),
        no_systemd=dict(type='bool'),
        agent_bin=dict(type='path'),
        sidecar_bin=dict(type='path'),
        sidecar_user=dict(type='str'),
        purge=dict(type='bool', default=False),
        root=dict(type='path', default='/'),
        binary=dict(type='path', default='/usr/local/sbin/sandbox'),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    binary = p['binary']
    present = p['state'] == 'present'

    if present:
        flags = setting_flags(p)
    else:
        flags = ['--name', p['name'], '--root', p['root']]
        if p['config'] is not None:
            flags += ['--config', p['config']]
        if p['no_systemd']:
            flags.append('--no-systemd')

    if module.check_mode:
        if present:
            cmd = [binary, 'plan', '--format', 'json', '--detailed-exitcode'] + flags
        else:
            cmd = [binary, 'setup', '--disable', '--dry-run', '--format', 'json', '--detailed-exitcode'] + flags
        rc, out, err = module.run_command(cmd)
        if rc not in (0, 2):
            fail(module, cmd, rc, out, err)
        try:
            plan = json.loads(out)
        except ValueError:
            module.fail_json(msg='sandbox plan printed no JSON', cmd=cmd, rc=rc, exit_code=rc, stdout=out, stderr=err)
        changes = [c for c in plan.get('changes', []) if c.get('changes')]
        # Not `rc`: Ansible takes a non-zero rc for a failure, and 2 here means changes pending.
        result = dict(changed=(rc == 2), changes=changes, events=plan.get('changes', []), cmd=cmd, exit_code=rc)
        if module._diff:
            result['diff'] = dict(before_header='sandbox %s' % p['name'],
                                  after_header='sandbox %s (plan)' % p['name'],
                                  prepared=plan_text(changes))
        module.exit_json(**result)

    cmd = [binary, 'setup', '--non-interactive', '--json'] + flags
    if not present:
        cmd.insert(2, '--disable')
        if p['purge']:
            cmd.append('--purge')
    rc, out, err = module.run_command(cmd)
    if rc != 0:
        fail(module, cmd, rc, out, err)
    events = json_lines(out)
    done = [e for e in events if e.get('event') == 'done']
    changes = [dict(step=e.get('step'), changes=e.get('changes', []))
               for e in events if e.get('event') == 'step' and e.get('changed')]
    changed = bool(done[-1].get('changed')) if done else bool(changes)
    result = dict(changed=changed, changes=changes, events=events, cmd=cmd, exit_code=rc)
    if module._diff:
        result['diff'] = dict(before_header='sandbox %s' % p['name'],
                              after_header='sandbox %s' % p['name'],
                              prepared=plan_text(changes))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
