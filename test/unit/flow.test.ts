// flow.start_flow: every step checked before any runs, steps in order each to its end, the first
// failure ends the flow with "<step> was failed".
import { describe, expect, it } from 'vitest';
import Type from 'typebox';
import { AgentError } from '../../src/agent/errors.js';
import { Executor, type CommandDefinition } from '../../src/agent/executor.js';
import { flowCommands } from '../../src/agent/extensions/flow.js';
import { silentLogger } from '../../src/agent/log.js';

function setUp(ran: string[], failOn?: string) {
  const step = (name: string, mode: 'sync' | 'async'): CommandDefinition => ({
    name,
    mode,
    params: Type.Object({ n: Type.Optional(Type.Integer()) }, { additionalProperties: false }),
    run: async (p: { n?: number }) => {
      await new Promise((r) => setTimeout(r, 5));
      if (name === failOn) throw new AgentError('DeploymentError', `step ${name} broke`);
      ran.push(`${name}:${p.n ?? '-'}`);
      return 'done';
    },
  });
  const ex = new Executor(silentLogger());
  ex.register([step('standby.sync', 'sync'), step('standby.power_off', 'async'), step('log.collect_system_logs', 'sync')]);
  ex.register(flowCommands(ex));
  return ex;
}

describe('flow.start_flow', () => {
  it('runs the steps in order, each to its end (async ones too), and succeeds', async () => {
    const ran: string[] = [];
    const ex = setUp(ran);
    const r = await ex.execute('flow.start_flow', { flow: [{ 'standby.sync': { n: 1 } }, { 'standby.power_off': {} }, { 'standby.sync': { n: 3 } }] }, { wait: true });
    expect(r.toWire()).toMatchObject({ command_name: 'start_flow', command_status: 'SUCCEEDED', command_error: null });
    expect(ran).toEqual(['standby.sync:1', 'standby.power_off:-', 'standby.sync:3']);
  });

  it('stops at the first failing step with "<step> was failed" and runs nothing after it', async () => {
    const ran: string[] = [];
    const ex = setUp(ran, 'standby.power_off');
    const r = await ex.execute('flow.start_flow', { flow: [{ 'standby.sync': {} }, { 'standby.power_off': {} }, { 'log.collect_system_logs': {} }] }, { wait: true });
    expect(r.status).toBe('FAILED');
    expect(r.toWire().command_error).toMatchObject({ type: 'CommandExecutionError', details: expect.stringMatching(/^standby\.power_off was failed: DeploymentError: step standby\.power_off broke/) });
    expect(ran).toEqual(['standby.sync:-']);
  });

  it('refuses a flow with an unknown step, bad step params or a nested flow before running anything (400)', async () => {
    const ran: string[] = [];
    const ex = setUp(ran);
    for (const [flow, why] of [
      [[{ 'standby.sync': {} }, { 'standby.nope': {} }], /standby\.nope: no such command/],
      [[{ 'standby.sync': {} }, { 'nope.sync': {} }], /nope\.sync: no such command/],
      [[{ 'standby.sync': { n: 'x' } }], /flow step standby\.sync: .*n/],
      [[{ 'standby.sync': { extra: 1 } }], /flow step standby\.sync/],
      [[{ 'flow.start_flow': { flow: [] } }], /cannot start another flow/],
    ] as const) {
      const err = await ex.execute('flow.start_flow', { flow }, { wait: true }).then(() => null, (e: unknown) => e);
      expect(err, JSON.stringify(flow)).toBeInstanceOf(AgentError);
      expect((err as AgentError).code).toBe(400);
      expect((err as AgentError).details).toMatch(why);
    }
    expect(ran).toEqual([]);
    expect(ex.list()).toEqual([]);
  });
});
