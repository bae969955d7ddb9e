import { describe, expect, it } from 'vitest';
import { AgentError } from '../../src/agent/errors.js';
import { DEFAULTS } from '../../src/agent/config.js';
import { silentLogger } from '../../src/agent/log.js';
import { HardwareManagers, type HardwareManager, type StepContext } from '../../src/agent/hardware/managers.js';
import { GENERIC_MANAGER_VERSION, genericHardwareManager } from '../../src/agent/hardware/generic-manager.js';
import type { Step } from '../../src/protocol/steps.js';
import { GetCleanStepsResult, StepsByManager } from '../../src/protocol/steps.js';
import { schemaErrors } from '../../src/protocol/validate.js';
import { FakeHost } from './support/fake-host.js';

const step = (name: string, priority: number, iface = 'deploy'): Step => ({ step: name, priority, interface: iface, reboot_requested: false, abortable: true });

function manager(p: {
  name: string;
  className: string;
  level: number;
  version?: string;
  clean?: Step[];
  deploy?: Step[];
  methods?: HardwareManager['methods'];
}): HardwareManager {
  return {
    name: p.name,
    className: p.className,
    supportLevel: p.level,
    version: p.version ?? '1.0',
    cleanSteps: () => p.clean ?? [],
    deploySteps: () => p.deploy ?? [],
    methods: p.methods ?? {},
  };
}

const ctx = (args: Record<string, unknown> = {}): StepContext => ({
  node: { uuid: 'n' },
  ports: [],
  args,
  host: new FakeHost(),
  config: DEFAULTS,
  log: silentLogger(),
  // Only write_image uses these; the steps under test here never touch them.
  services: {} as StepContext['services'],
  command: { id: 'test', log: silentLogger(), reportProgress: () => undefined },
});

describe('HardwareManagers.steps', () => {
  it('groups steps by manager class name', () => {
    const hm = new HardwareManagers([
      manager({ name: 'generic_hardware_manager', className: 'GenericHardwareManager', level: 1, clean: [step('erase_devices', 10), step('erase_pstore', 0)] }),
      manager({ name: 'acme_hardware_manager', className: 'AcmeHardwareManager', level: 2, clean: [step('update_firmware', 0, 'management')] }),
    ]);
    expect(hm.steps('clean')).toEqual({
      AcmeHardwareManager: [step('update_firmware', 0, 'management')],
      GenericHardwareManager: [step('erase_devices', 10), step('erase_pstore', 0)],
    });
    expect(hm.steps('deploy')).toEqual({});
  });

  it('gives a duplicate step to the manager with the higher support level, whatever its priority', () => {
    const hm = new HardwareManagers([
      manager({ name: 'g', className: 'Generic', level: 1, clean: [step('erase_devices', 10), step('erase_pstore', 0)] }),
      manager({ name: 'v', className: 'Vendor', level: 3, clean: [step('erase_devices', 0)] }),
    ]);
    expect(hm.steps('clean')).toEqual({ Generic: [step('erase_pstore', 0)], Vendor: [step('erase_devices', 0)] });
  });

  it('on equal support level gives it to the higher priority; on a full tie the first manager keeps it', () => {
    const hm = new HardwareManagers([
      manager({ name: 'a', className: 'A', level: 2, clean: [step('erase_devices', 10), step('tie', 5)] }),
      manager({ name: 'b', className: 'B', level: 2, clean: [step('erase_devices', 20), step('tie', 5)] }),
    ]);
    expect(hm.steps('clean')).toEqual({ A: [step('tie', 5)], B: [step('erase_devices', 20)] });
  });

  it('validates as a get_clean_steps result with the generic manager', () => {
    const hm = new HardwareManagers([genericHardwareManager()]);
    const result = { clean_steps: hm.steps('clean'), hardware_manager_version: hm.versions() };
    expect(schemaErrors(GetCleanStepsResult, result)).toEqual([]);
    expect(schemaErrors(StepsByManager, hm.steps('deploy'))).toEqual([]);
    expect(result.hardware_manager_version).toEqual({ generic_hardware_manager: '1.1' });
    expect(GENERIC_MANAGER_VERSION).toBe('1.1');
    const clean = result.clean_steps['GenericHardwareManager']!;
    expect(Object.keys(result.clean_steps)).toEqual(['GenericHardwareManager']);
    expect(clean.find((s) => s.step === 'erase_devices')).toEqual({ step: 'erase_devices', priority: 10, interface: 'deploy', reboot_requested: false, abortable: true });
    expect(clean.find((s) => s.step === 'erase_devices_metadata')).toMatchObject({ priority: 99, interface: 'deploy', abortable: true });
    expect(hm.steps('deploy')['GenericHardwareManager']!.find((s) => s.step === 'erase_devices_metadata')).toMatchObject({ priority: 0, interface: 'deploy' });
  });
});

describe('HardwareManagers.versions / versionsMatch', () => {
  const hm = new HardwareManagers([
    manager({ name: 'generic_hardware_manager', className: 'G', level: 1, version: '1.1' }),
    manager({ name: 'acme', className: 'A', level: 2, version: '3' }),
  ]);

  it('maps manager names to versions', () => {
    expect(hm.versions()).toEqual({ generic_hardware_manager: '1.1', acme: '3' });
  });

  it('matches when Ironic sent nothing or exactly ours', () => {
    expect(hm.versionsMatch(undefined)).toBe(true);
    expect(hm.versionsMatch(null)).toBe(true);
    expect(hm.versionsMatch({})).toBe(true);
    expect(hm.versionsMatch({ acme: '3', generic_hardware_manager: '1.1' })).toBe(true);
  });

  it('does not match a different version, a missing or an extra manager', () => {
    expect(hm.versionsMatch({ generic_hardware_manager: '1.0', acme: '3' })).toBe(false);
    expect(hm.versionsMatch({ generic_hardware_manager: '1.1' })).toBe(false);
    expect(hm.versionsMatch({ generic_hardware_manager: '1.1', acme: '3', other: '1' })).toBe(false);
  });
});

describe('HardwareManagers.dispatch', () => {
  it('calls the method of the highest support level manager that has it, with the context', async () => {
    const calls: string[] = [];
    const hm = new HardwareManagers([
      manager({ name: 'g', className: 'G', level: 1, methods: { erase_devices: async () => (calls.push('g'), 'generic'), only_generic: async (c) => c.args } }),
      manager({ name: 'v', className: 'V', level: 2, methods: { erase_devices: async () => (calls.push('v'), 'vendor') } }),
    ]);
    expect(await hm.dispatch('erase_devices', ctx())).toBe('vendor');
    expect(calls).toEqual(['v']);
    expect(await hm.dispatch('only_generic', ctx({ iterations: 2 }))).toEqual({ iterations: 2 });
  });

  it('throws HardwareManagerMethodNotFound for an unknown method', async () => {
    const hm = new HardwareManagers([genericHardwareManager()]);
    const err = await hm.dispatch('burnin_gpu', ctx()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).toCommandError()).toEqual({
      type: 'HardwareManagerMethodNotFound',
      code: 500,
      message: 'No HardwareManager found to handle method',
      details: 'Could not find method: burnin_gpu',
    });
  });

  it('passes a method failure through unchanged', async () => {
    const boom = new Error('disk on fire');
    const hm = new HardwareManagers([manager({ name: 'g', className: 'G', level: 1, methods: { x: async () => Promise.reject(boom) } })]);
    await expect(hm.dispatch('x', ctx())).rejects.toBe(boom);
  });
});
