import { describe, expect, it } from 'vitest';
import Type from 'typebox';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, errors } from '../../src/agent/errors.js';
import { Executor, type CommandDefinition, type CommandRecord } from '../../src/agent/executor.js';
import { silentLogger } from '../../src/agent/log.js';
import { CommandResult } from '../../src/protocol/commands.js';
import { schemaErrors } from '../../src/protocol/validate.js';
import { gate } from '../helpers/gate.js';

const cmd = (name: string, mode: 'sync' | 'async', run: CommandDefinition['run'], params = Type.Object({}, { additionalProperties: true })): CommandDefinition => ({
  name,
  mode,
  params,
  run,
});

function executor(defs: CommandDefinition[], onAsyncFinished?: (r: CommandRecord) => void): Executor {
  const ex = new Executor(silentLogger(), onAsyncFinished);
  ex.register(defs);
  return ex;
}

async function agentError(p: Promise<unknown>): Promise<AgentError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AgentError);
  return err as AgentError;
}

const wireOk = (r: CommandRecord) => expect(schemaErrors(CommandResult, r.toWire())).toEqual([]);

describe('Executor: sync commands', () => {
  it('runs inline, stores the short command_name and returns the result', async () => {
    const ex = executor([cmd('standby.get_partition_uuids', 'sync', async () => ({ 'root uuid': '0x1a2b3c4d' }))]);
    const r = await ex.execute('standby.get_partition_uuids', {}, { wait: false });
    expect(r.toWire()).toEqual({
      id: r.id,
      command_name: 'get_partition_uuids',
      command_status: 'SUCCEEDED',
      command_error: null,
      command_result: { 'root uuid': '0x1a2b3c4d' },
    });
    expect(r.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    wireOk(r);
  });

  it('wraps a string result as {"result": "<text>"} and undefined as null', async () => {
    const ex = executor([cmd('x.text', 'sync', async () => 'hello'), cmd('x.nothing', 'sync', async () => undefined)]);
    expect((await ex.execute('x.text', {}, { wait: true })).result).toEqual({ result: 'hello' });
    expect((await ex.execute('x.nothing', {}, { wait: true })).result).toBeNull();
  });

  it('stores a failed sync command under the dotted name, non-agent errors as CommandExecutionError', async () => {
    const ex = executor([
      cmd('standby.sync', 'sync', async () => {
        throw new Error('sync: exit status 1');
      }),
      cmd('log.collect_system_logs', 'sync', async () => {
        throw errors.deviceNotFound('no disk');
      }),
    ]);
    const r = await ex.execute('standby.sync', {}, { wait: false });
    expect(r.toWire()).toEqual({
      id: r.id,
      command_name: 'standby.sync',
      command_status: 'FAILED',
      command_result: null,
      command_error: { type: 'CommandExecutionError', code: 500, message: 'Command execution failed', details: 'sync: exit status 1' },
    });
    wireOk(r);
    const r2 = await ex.execute('log.collect_system_logs', {}, { wait: false });
    expect(r2.commandName).toBe('log.collect_system_logs');
    expect(r2.toWire().command_error).toEqual({
      type: 'DeviceNotFound',
      code: 404,
      message: 'Error finding the disk or partition device to deploy the image onto',
      details: 'no disk',
    });
    expect(ex.list().map((c) => c.command_status)).toEqual(['FAILED', 'FAILED']);
  });

  it('answers an InvalidContentError raised by a sync command as HTTP 400, not stored', async () => {
    const ex = executor([
      cmd('poll.set_node_info', 'sync', async () => {
        throw errors.invalidCommand('set_node_info is only available in standalone mode');
      }),
    ]);
    const err = await agentError(ex.execute('poll.set_node_info', {}, { wait: true }));
    expect(err.code).toBe(400);
    expect(err.type).toBe('InvalidCommandError');
    expect(ex.list()).toEqual([]);
  });

  it('serialises sync commands with one lock (POSTs never overlap)', async () => {
    const order: string[] = [];
    const g = gate();
    const ex = executor([
      cmd('x.slow', 'sync', async () => {
        order.push('slow:start');
        await g.promise;
        order.push('slow:end');
        return 'slow';
      }),
      cmd('x.fast', 'sync', async () => {
        order.push('fast');
        return 'fast';
      }),
    ]);
    const p1 = ex.execute('x.slow', {}, { wait: false });
    const p2 = ex.execute('x.fast', {}, { wait: false });
    await sleep(30);
    expect(order).toEqual(['slow:start']);
    expect(ex.list()).toEqual([]); // a sync command is listed once it has finished
    g.resolve(undefined);
    const [r1, r2] = await Promise.all([p1, p2]);
    expect(order).toEqual(['slow:start', 'slow:end', 'fast']);
    expect(ex.list().map((c) => c.id)).toEqual([r1.id, r2.id]);
  });

  it('keeps serving after a command threw: the lock is released', async () => {
    const ex = executor([cmd('x.ok', 'sync', async () => 'ok')]);
    await expect(ex.execute('nodot', {}, { wait: false })).rejects.toThrow(AgentError);
    await expect(ex.execute('x.ok', {}, { wait: false })).resolves.toMatchObject({ status: 'SUCCEEDED' });
  });
});

describe('Executor: async commands', () => {
  it('returns RUNNING at once, then SUCCEEDED with the result', async () => {
    const g = gate<unknown>();
    const ex = executor([cmd('clean.execute_clean_step', 'async', () => g.promise)]);
    const r = await ex.execute('clean.execute_clean_step', {}, { wait: false });
    expect(r.toWire()).toEqual({ id: r.id, command_name: 'execute_clean_step', command_status: 'RUNNING', command_error: null, command_result: null });
    expect(ex.list()).toHaveLength(1); // listed while running
    const result = { clean_result: null, clean_step: { step: 'erase_devices_metadata', interface: 'deploy' } };
    g.resolve(result);
    await r.done;
    expect(r.toWire()).toMatchObject({ command_name: 'execute_clean_step', command_status: 'SUCCEEDED', command_result: result, command_error: null });
    wireOk(r);
  });

  it('wraps a string result as {"result": "<command>: <text>"}', async () => {
    const ex = executor([cmd('standby.prepare_image', 'async', async () => 'image (img-1) written to device /dev/sda root_uuid=0x1a2b3c4d')]);
    const r = await ex.execute('standby.prepare_image', {}, { wait: true });
    expect(r.result).toEqual({ result: 'prepare_image: image (img-1) written to device /dev/sda root_uuid=0x1a2b3c4d' });
    expect(r.commandName).toBe('prepare_image');
  });

  it('keeps the short name on failure and wraps non-agent errors as CommandExecutionError', async () => {
    const ex = executor([
      cmd('image.install_bootloader', 'async', async () => {
        throw new TypeError('grub-install: not found');
      }),
      cmd('clean.execute_clean_step', 'async', async () => {
        throw errors.cleaning('Unexpected exception performing clean step erase_devices.');
      }),
    ]);
    const r = await ex.execute('image.install_bootloader', {}, { wait: true });
    expect(r.toWire()).toMatchObject({
      command_name: 'install_bootloader',
      command_status: 'FAILED',
      command_result: null,
      command_error: { type: 'CommandExecutionError', code: 500, message: 'Command execution failed', details: 'grub-install: not found' },
    });
    expect(r.error!.cause).toBeInstanceOf(TypeError);
    const r2 = await ex.execute('clean.execute_clean_step', {}, { wait: true });
    expect(r2.toWire().command_error).toEqual({
      type: 'CleaningError',
      code: 500,
      message: 'Clean step failed',
      details: 'Unexpected exception performing clean step erase_devices.',
    });
    wireOk(r2);
  });

  it('turns VersionMismatch into CLEAN_VERSION_MISMATCH', async () => {
    const ex = executor([
      cmd('clean.execute_clean_step', 'async', async () => {
        throw errors.versionMismatch({ generic_hardware_manager: '1.1' }, { generic_hardware_manager: '1.0' });
      }),
    ]);
    const r = await ex.execute('clean.execute_clean_step', {}, { wait: true });
    expect(r.toWire()).toMatchObject({
      command_name: 'execute_clean_step',
      command_status: 'CLEAN_VERSION_MISMATCH',
      command_result: null,
      command_error: {
        type: 'VersionMismatch',
        code: 409,
        message: 'Hardware managers version mismatch, reload agent with correct version',
        details:
          'Current versions: {"generic_hardware_manager":"1.1"}, versions used by ironic: {"generic_hardware_manager":"1.0"}',
      },
    });
    wireOk(r);
  });

  it('calls onAsyncFinished once per async command, after it is final, never for sync ones', async () => {
    const seen: Array<{ name: string; status: string }> = [];
    const ex = executor(
      [
        cmd('x.async_ok', 'async', async () => null),
        cmd('x.async_fail', 'async', async () => {
          throw new Error('boom');
        }),
        cmd('x.sync', 'sync', async () => null),
      ],
      (r) => seen.push({ name: r.commandName, status: r.status }),
    );
    await ex.execute('x.sync', {}, { wait: true });
    await ex.execute('x.async_ok', {}, { wait: true });
    await ex.execute('x.async_fail', {}, { wait: true });
    await sleep(10);
    expect(seen).toEqual([
      { name: 'async_ok', status: 'SUCCEEDED' },
      { name: 'async_fail', status: 'FAILED' },
    ]);
  });

  it('survives a throwing onAsyncFinished hook', async () => {
    const ex = executor([cmd('x.a', 'async', async () => 'done')], () => {
      throw new Error('hook broke');
    });
    const r = await ex.execute('x.a', {}, { wait: true });
    await sleep(10);
    expect(r.status).toBe('SUCCEEDED');
    await expect(ex.execute('x.a', {}, { wait: true })).resolves.toMatchObject({ status: 'SUCCEEDED' });
  });

  it('wait: true resolves when the command is final, wait: false at once', async () => {
    const g = gate();
    const ex = executor([cmd('x.a', 'async', () => g.promise)]);
    let waited = false;
    const pWait = ex.execute('x.a', {}, { wait: true }).then((r) => ((waited = true), r));
    await sleep(30);
    expect(waited).toBe(false);
    expect(ex.last()!.status).toBe('RUNNING');
    g.resolve('ok');
    const r = await pWait;
    expect(r.status).toBe('SUCCEEDED');
    expect(r.finishedAt).not.toBeNull();
  });

  it('answers 409 AgentIsBusy for any new command while one runs', async () => {
    const g = gate();
    const ex = executor([cmd('standby.prepare_image', 'async', () => g.promise), cmd('standby.sync', 'sync', async () => null)]);
    await ex.execute('standby.prepare_image', {}, { wait: false });
    for (const name of ['standby.sync', 'standby.prepare_image', 'nosuch.ext', 'standby.unknown']) {
      const err = await agentError(ex.execute(name, {}, { wait: false }));
      expect(err.type).toBe('AgentIsBusy');
      expect(err.code).toBe(409);
      expect(err.toFault()).toEqual({ faultcode: 'Client', faultstring: 'Agent is busy: executing command prepare_image' });
    }
    expect(ex.list()).toHaveLength(1);
    g.resolve(null);
    await ex.last()!.done;
    await expect(ex.execute('standby.sync', {}, { wait: false })).resolves.toMatchObject({ status: 'SUCCEEDED' });
  });

  it('a bad name (no dot) is 400 even while busy (IPA checks it first)', async () => {
    const g = gate();
    const ex = executor([cmd('x.a', 'async', () => g.promise)]);
    await ex.execute('x.a', {}, { wait: false });
    expect((await agentError(ex.execute('nodot', {}, { wait: false }))).code).toBe(400);
    g.resolve(null);
  });
});

describe('Executor: request errors (HTTP, never stored)', () => {
  const ex = () =>
    executor([
      cmd('standby.cache_image', 'async', async () => 'cached', Type.Object({ image_info: Type.Object({ id: Type.String(), urls: Type.Array(Type.String(), { minItems: 1 }) }) })),
    ]);

  it('404 for an unknown extension', async () => {
    const e = ex();
    const err = await agentError(e.execute('nosuch.cmd', {}, { wait: false }));
    expect(err.toCommandError()).toEqual({ type: 'RequestedObjectNotFoundError', code: 404, message: 'Not found', details: 'Extension with id nosuch not found.' });
    expect(e.list()).toEqual([]);
  });

  it('400 for an unknown command of a known extension', async () => {
    const e = ex();
    const err = await agentError(e.execute('standby.nope', {}, { wait: false }));
    expect(err.toCommandError()).toEqual({ type: 'InvalidCommandError', code: 400, message: 'Invalid command', details: 'Unknown command: nope' });
    expect(e.list()).toEqual([]);
  });

  it.each(['nodot', '.cache_image', 'standby.', ''])('400 for the malformed name "%s"', async (name) => {
    const e = ex();
    const err = await agentError(e.execute(name, {}, { wait: false }));
    expect(err.type).toBe('InvalidCommandError');
    expect(err.details).toBe('Command name must be of the form <extension>.<name>');
    expect(e.list()).toEqual([]);
  });

  it('400 InvalidCommandParamsError for params that fail the schema, naming the problem', async () => {
    const e = ex();
    const err = await agentError(e.execute('standby.cache_image', { image_info: { id: 'img', urls: [] } }, { wait: false }));
    expect(err.type).toBe('InvalidCommandParamsError');
    expect(err.code).toBe(400);
    expect(err.details).toMatch(/^standby\.cache_image: \/image_info\/urls /);
    const err2 = await agentError(e.execute('standby.cache_image', {}, { wait: false }));
    expect(err2.details).toContain('image_info');
    expect(e.list()).toEqual([]);
    await expect(e.execute('standby.cache_image', { image_info: { id: 'img', urls: ['http://x/img'] } }, { wait: true })).resolves.toMatchObject({
      status: 'SUCCEEDED',
      result: { result: 'cache_image: cached' },
    });
  });
});

describe('Executor: registry and history', () => {
  it('refuses bad or duplicate registrations', () => {
    const ex = new Executor(silentLogger());
    expect(() => ex.register([cmd('nodot', 'sync', async () => null)])).toThrow('bad command name nodot');
    ex.register([cmd('a.b', 'sync', async () => null)]);
    expect(() => ex.register([cmd('a.b', 'sync', async () => null)])).toThrow('command a.b registered twice');
    expect(ex.commandNames()).toEqual(['a.b']);
    expect(ex.definition('a.b')?.mode).toBe('sync');
    expect(ex.definition('a.c')).toBeUndefined();
  });

  it('keeps history in start order, finds by id, and reset() forgets everything', async () => {
    const g = gate();
    const ex = executor([cmd('x.s', 'sync', async () => 's'), cmd('x.a', 'async', () => g.promise)]);
    const r1 = await ex.execute('x.s', {}, { wait: false });
    const r2 = await ex.execute('x.a', {}, { wait: false });
    g.resolve('a');
    await r2.done;
    const r3 = await ex.execute('x.s', {}, { wait: false });
    expect(ex.list().map((c) => [c.id, c.command_name])).toEqual([
      [r1.id, 's'],
      [r2.id, 'a'],
      [r3.id, 's'],
    ]);
    expect(ex.get(r2.id)).toBe(r2);
    expect(ex.last()).toBe(r3);
    expect(new Set([r1.id, r2.id, r3.id]).size).toBe(3);
    ex.reset();
    expect(ex.list()).toEqual([]);
    expect(ex.get(r1.id)).toBeUndefined();
    expect(ex.last()).toBeUndefined();
    // Registered commands survive a reset.
    await expect(ex.execute('x.s', {}, { wait: false })).resolves.toMatchObject({ status: 'SUCCEEDED' });
  });
});
