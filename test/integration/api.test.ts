// The command API of a real agent process (standalone), route by route, against what IPA 9.4.3
// answers (agent-protocol.md §5): discovery documents, status, the command history, POST
// processing order and its errors, wait semantics, AgentIsBusy, agent tokens, and an event loop
// that keeps answering while a long erase runs. The only disk the agent may touch is a 1 GiB loop
// device made here (--devices), and power actions are simulated (--power none).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLoopDevice, type LoopDevice } from '../helpers/loop-device.js';
import { freePort, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import {
  BASE_ARGS,
  METHOD_NOT_ALLOWED_FAULT,
  NOT_FOUND_FAULT,
  alive,
  commandsRun,
  destroyLoop,
  expectFault,
  expectResultObject,
  get,
  httpRequest,
  postJson,
  tempDir,
  type HttpAnswer,
  removeTempDirs,
  stopAgent,
} from './support.js';

const NODE = { uuid: '6f6a4c2e-0d2b-4a8e-9d7c-1c2b3a4d5e6f', driver_internal_info: {} };

function commands(res: HttpAnswer): Array<Record<string, unknown>> {
  expect(res.status).toBe(200);
  const body = res.json as { commands: Array<Record<string, unknown>> };
  expect(Object.keys(body)).toEqual(['commands']);
  return body.commands;
}

const cleanStep = (step: string, extra: Record<string, unknown> = {}) => ({
  name: 'clean.execute_clean_step',
  params: {
    step: { step, interface: 'deploy', priority: 10, reboot_requested: false, abortable: true },
    node: { ...NODE, ...extra },
    ports: [],
    clean_version: { generic_hardware_manager: '1.1' },
  },
});

afterAll(removeTempDirs);

describe('command API (standalone agent)', () => {
  let loop: LoopDevice | undefined;
  let agent: AgentProcess | undefined;
  let url = '';

  beforeAll(async () => {
    loop = await createLoopDevice(1024);
    agent = await startAgent({ args: [...BASE_ARGS, '--devices', loop.path, '--debug'], port: await freePort() });
    url = agent.url;
  });

  afterAll(async () => {
    await stopAgent(agent);
    await destroyLoop(loop);
  });

  it('GET / answers the root document', async () => {
    const res = await get(url, '/');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    const v1 = {
      id: 'v1',
      links: [
        { href: `${url}/v1`, rel: 'self' },
        { href: 'https://docs.openstack.org/ironic-python-agent/', rel: 'describedby', type: 'text/html' },
      ],
    };
    expect(res.json).toEqual({
      name: 'OpenStack Ironic Python Agent API',
      description: 'Ironic Python Agent is a provisioning agent for OpenStack Ironic',
      versions: [v1],
      default_version: v1,
    });
  });

  it('GET /v1 and /v1/ answer the v1 document', async () => {
    const a = await get(url, '/v1');
    const b = await get(url, '/v1/');
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    expect(a.json).toEqual(b.json);
    const doc = b.json as Record<string, unknown>;
    expect(Object.keys(doc).sort()).toEqual(['commands', 'id', 'links', 'media_types', 'status']);
    expect(doc['id']).toBe('v1');
    expect(doc['media_types']).toEqual([
      { base: 'application/json', type: 'application/vnd.openstack.ironic-python-agent.v1+json' },
    ]);
    expect(doc['commands']).toEqual([
      { href: `${url}/v1/commands`, rel: 'self' },
      { href: `${url}/commands`, rel: 'bookmark' },
    ]);
    expect(doc['status']).toEqual([
      { href: `${url}/v1/status`, rel: 'self' },
      { href: `${url}/status`, rel: 'bookmark' },
    ]);
  });

  it('GET /v1/status and /status answer started_at and the IPA version', async () => {
    const a = await get(url, '/v1/status');
    const b = await get(url, '/status');
    expect(a.status).toBe(200);
    expect(b.json).toEqual(a.json);
    const st = a.json as Record<string, unknown>;
    expect(st['version']).toBe('9.4.3');
    expect(st['started_at']).toBeTypeOf('number');
    expect(Math.abs((st['started_at'] as number) - Date.now() / 1000)).toBeLessThan(600);
  });

  it('HEAD works wherever GET does', async () => {
    for (const path of ['/', '/v1', '/v1/', '/v1/status', '/status', '/v1/commands/', '/commands/']) {
      const res = await httpRequest(url, { method: 'HEAD', path });
      expect(res.status, path).toBe(200);
      expect(res.text).toBe('');
    }
  });

  it('the command history is empty at start and the same on all four list paths', async () => {
    for (const path of ['/v1/commands', '/v1/commands/', '/commands', '/commands/']) {
      expect(commands(await get(url, path)), path).toEqual([]);
    }
  });

  it('an unknown command id is a 404 fault on both prefixes', async () => {
    expectFault(await get(url, '/v1/commands/no-such-id'), 404, 'Not found: Command with id no-such-id not found.');
    expectFault(await get(url, '/commands/no-such-id'), 404, 'Not found: Command with id no-such-id not found.');
    expectFault(await get(url, '/v1/commands/no-such-id?wait=true'), 404, 'Not found: Command with id no-such-id not found.');
    const long = 'x'.repeat(4000);
    expectFault(await get(url, `/v1/commands/${long}`), 404, `Not found: Command with id ${long} not found.`);
  });

  it('POST runs a sync command on every list path (with and without the slash) and records it', async () => {
    const ids: string[] = [];
    for (const path of ['/v1/commands/', '/v1/commands', '/commands/', '/commands']) {
      const res = await postJson(url, path, { name: 'standby.get_partition_uuids', params: {} });
      expect(res.status, path).toBe(200);
      const r = expectResultObject(res.json);
      expect(r).toMatchObject({
        command_name: 'get_partition_uuids',
        command_status: 'SUCCEEDED',
        command_error: null,
        command_result: {},
      });
      ids.push(r['id'] as string);
    }
    // A sync command with a dict result, posted with ?wait=false (ignored for sync commands).
    const steps = await postJson(url, '/v1/commands/?wait=false', { name: 'clean.get_clean_steps', params: { node: NODE, ports: [] } });
    const r = expectResultObject(steps.json);
    expect(r['command_name']).toBe('get_clean_steps');
    expect(r['command_status']).toBe('SUCCEEDED');
    expect(r['command_result']).toEqual({
      clean_steps: {
        GenericHardwareManager: expect.arrayContaining([
          { step: 'erase_devices', priority: 10, interface: 'deploy', reboot_requested: false, abortable: true },
          { step: 'erase_devices_metadata', priority: 99, interface: 'deploy', reboot_requested: false, abortable: true },
        ]),
      },
      hardware_manager_version: { generic_hardware_manager: '1.1' },
    });
    ids.push(r['id'] as string);

    // History: oldest first, same on all list paths; each record also by id on both prefixes.
    const list = commands(await get(url, '/v1/commands/'));
    expect(list.map((c) => c['id'])).toEqual(ids);
    expect(commands(await get(url, '/commands'))).toEqual(list);
    for (const c of list) {
      expectResultObject(c);
      const one = await get(url, `/v1/commands/${c['id']}`);
      expect(one.status).toBe(200);
      expect(one.json).toEqual(c);
      expect((await get(url, `/commands/${c['id']}?wait=true`)).json).toEqual(c);
    }
  });

  it('answers 405 with a fault for wrong methods on known routes', async () => {
    const cases: Array<[string, string, string]> = [
      ['POST', '/', 'GET, HEAD'],
      ['PUT', '/', 'GET, HEAD'],
      ['POST', '/v1', 'GET, HEAD'],
      ['DELETE', '/v1/', 'GET, HEAD'],
      ['POST', '/v1/status', 'GET, HEAD'],
      ['PATCH', '/status', 'GET, HEAD'],
      ['PUT', '/v1/commands/', 'GET, HEAD, POST'],
      ['DELETE', '/v1/commands', 'GET, HEAD, POST'],
      ['OPTIONS', '/commands/', 'GET, HEAD, POST'],
      ['POST', '/v1/commands/some-id', 'GET, HEAD'],
      ['DELETE', '/commands/some-id', 'GET, HEAD'],
      ['TRACE', '/v1/status', 'GET, HEAD'],
      ['PROPFIND', '/v1/commands/', 'GET, HEAD, POST'],
      ['MKCOL', '/v1/commands/x', 'GET, HEAD'],
    ];
    for (const [method, path, allow] of cases) {
      const res = await httpRequest(url, { method, path, headers: { 'content-type': 'application/json' }, body: method === 'TRACE' ? undefined : '{}' });
      expect(res.status, `${method} ${path}`).toBe(405);
      expectFault(res, 405, METHOD_NOT_ALLOWED_FAULT);
      expect(res.headers['allow'], `${method} ${path}`).toBe(allow);
    }
  });

  it('answers 404 with a fault for unknown routes', async () => {
    for (const path of ['/v2', '/v1/commandsx', '/v1/commands/a/b', '//v1/status', '/V1/status', '/v1/status/', '/favicon.ico', '/v1/../v1/status', '/v1/%2e%2e/status']) {
      expectFault(await get(url, path), 404, NOT_FOUND_FAULT);
    }
    expectFault(await postJson(url, '/v2/commands/', { name: 'standby.sync', params: {} }), 404, NOT_FOUND_FAULT);
    // Broken percent-encoding never reaches a route: still a fault body.
    expectFault(await get(url, '/v1/commands/%zz'), 400);
  });

  it('rejects a body without a string name and an object params with 400, recording nothing', async () => {
    const before = commands(await get(url, '/v1/commands/')).length;
    const bad: unknown[] = [
      '',
      'not json',
      '{"name": "standby.sync", "params": {}',
      'null',
      '[]',
      '42',
      '"standby.sync"',
      {},
      { name: 'standby.sync' },
      { params: {} },
      { name: 42, params: {} },
      { name: null, params: {} },
      { name: ['standby.sync'], params: {} },
      { name: 'standby.sync', params: [] },
      { name: 'standby.sync', params: null },
      { name: 'standby.sync', params: 'x' },
      { name: 'standby.sync', params: 1 },
    ];
    for (const body of bad) {
      const res = await postJson(url, '/v1/commands/', typeof body === 'string' ? body : JSON.stringify(body));
      expectFault(res, 400, /^400 Bad Request: (Missing or invalid name or params|Failed to decode JSON object: .+)$/);
    }
    expectFault(await postJson(url, '/v1/commands/', { name: 1, params: {} }), 400, '400 Bad Request: Missing or invalid name or params');
    expect(commands(await get(url, '/v1/commands/')).length).toBe(before);
  });

  it('answers invalid command names and parameters as IPA, recording nothing', async () => {
    const before = commands(await get(url, '/v1/commands/')).length;
    expectFault(
      await postJson(url, '/v1/commands/', { name: 'standby', params: {} }),
      400,
      'Invalid command: Command name must be of the form <extension>.<name>',
    );
    expectFault(await postJson(url, '/v1/commands/', { name: 'nosuchext.run', params: {} }), 404, 'Not found: Extension with id nosuchext not found.');
    expectFault(await postJson(url, '/v1/commands/', { name: 'standby.nosuchcommand', params: {} }), 400, 'Invalid command: Unknown command: nosuchcommand');
    // Parameter validation (InvalidCommandParamsError).
    for (const params of [{}, { step: {} }, { step: { step: '' } }, { step: 'erase_devices' }, { step: { step: 'x', args: 'y' } }, { step: { step: 'x' }, ports: 'p' }]) {
      expectFault(await postJson(url, '/v1/commands/', { name: 'clean.execute_clean_step', params }), 400, /^Invalid command parameters: /);
    }
    expect(commands(await get(url, '/v1/commands/')).length).toBe(before);
  });

  it('runs an async command: RUNNING without wait, final with wait=true in any case', async () => {
    const metadata = cleanStep('erase_devices_metadata');
    // Only the literal "true" (any case) waits.
    for (const wait of ['false', '1', 'yes', '', 'truee', 'true%20', 'on']) {
      const res = await postJson(url, `/v1/commands/?wait=${wait}`, metadata);
      expect(res.status).toBe(200);
      const r = expectResultObject(res.json);
      expect(r['command_name'], `wait=${wait}`).toBe('execute_clean_step');
      expect(r['command_status'], `wait=${wait}`).toBe('RUNNING');
      // IPA: null while running (Ferrum may show {"progress": …} for long commands).
      if (r['command_result'] !== null) expect(Object.keys(r['command_result'] as object)).toEqual(['progress']);
      // GET without a true wait does not block; GET ?wait=TRUE blocks until it is done.
      const peek = await get(url, `/v1/commands/${r['id']}?wait=no`);
      expect((peek.json as Record<string, unknown>)['command_status']).toBe('RUNNING');
      const done = await get(url, `/v1/commands/${r['id']}?wait=TRUE`);
      expect(done.json).toEqual({
        id: r['id'],
        command_name: 'execute_clean_step',
        command_status: 'SUCCEEDED',
        command_error: null,
        command_result: { clean_result: null, clean_step: metadata.params.step },
      });
    }
    for (const wait of ['true', 'TRUE', 'True', 'tRuE']) {
      const res = await postJson(url, `/v1/commands/?wait=${wait}`, metadata);
      const r = expectResultObject(res.json);
      expect(r['command_status'], `wait=${wait}`).toBe('SUCCEEDED');
      expect(r['command_result']).toEqual({ clean_result: null, clean_step: metadata.params.step });
    }
  });

  it('records a failing async command as FAILED under its short name', async () => {
    const res = await postJson(url, '/v1/commands/?wait=true', cleanStep('no_such_step'));
    const r = expectResultObject(res.json);
    expect(r).toMatchObject({
      command_name: 'execute_clean_step',
      command_status: 'FAILED',
      command_result: null,
      command_error: {
        type: 'HardwareManagerMethodNotFound',
        code: 500,
        message: 'No HardwareManager found to handle method',
        details: 'Could not find method: no_such_step',
      },
    });
    const list = commands(await get(url, '/v1/commands/'));
    expect(list.at(-1)).toEqual(r);
  });

  it('answers 409 while an async command runs and never blocks GETs (long shred of 1 GiB)', async () => {
    const before = commands(await get(url, '/v1/commands/')).length;
    // 3 random passes and a zero pass over 1 GiB: several seconds of shred.
    const erase = cleanStep('erase_devices', { driver_internal_info: { agent_erase_devices_iterations: 3 } });
    const started = await postJson(url, '/v1/commands/', erase);
    const r = expectResultObject(started.json);
    expect(r['command_status']).toBe('RUNNING');
    const id = r['id'] as string;

    // Busy: any further command is refused with 409, after the name check (IPA order), and not recorded.
    expectFault(await postJson(url, '/v1/commands/', { name: 'standby.get_partition_uuids', params: {} }), 409, 'Agent is busy: executing command execute_clean_step');
    expectFault(await postJson(url, '/v1/commands/?wait=true', erase), 409, 'Agent is busy: executing command execute_clean_step');
    expectFault(await postJson(url, '/v1/commands/', { name: 'nosuchext.x', params: {} }), 409, /^Agent is busy/);
    expectFault(await postJson(url, '/v1/commands/', { name: 'nodot', params: {} }), 400, /^Invalid command: /);

    // The event loop keeps answering while shred runs. Each GET is timed; a blocked event loop
    // (e.g. a synchronous wait on the child) would stall every request for seconds. On a busy
    // machine a single request can lose ~100 ms to scheduling alone, so: 95% of the answers
    // within 200 ms, a typical one within 50 ms, none beyond 1 s.
    const listMs: number[] = [];
    const statusMs: number[] = [];
    const itemMs: number[] = [];
    const burstMs: number[] = [];
    let status = 'RUNNING';
    for (let round = 1; status === 'RUNNING'; round++) {
      const [l, s, one] = await Promise.all([get(url, '/v1/commands/'), get(url, '/v1/status'), get(url, `/v1/commands/${id}`)]);
      listMs.push(l.ms);
      statusMs.push(s.ms);
      itemMs.push(one.ms);
      expect(s.status).toBe(200);
      expect(one.status).toBe(200);
      const last = commands(l).at(-1)!;
      expect(last['id']).toBe(id);
      status = last['command_status'] as string;
      // A burst of 16 parallel list reads now and then.
      if (round % 10 === 0) {
        const burst = await Promise.all(Array.from({ length: 16 }, () => get(url, '/v1/commands/')));
        for (const b of burst) burstMs.push(b.ms);
      }
      await sleep(25);
    }
    const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))]!;
    const report = (xs: number[]) =>
      `n=${xs.length} median=${quantile(xs, 0.5).toFixed(1)}ms p95=${quantile(xs, 0.95).toFixed(1)}ms max=${Math.max(...xs).toFixed(1)}ms`;
    console.log(
      `while shred ran: GET /v1/commands/ ${report(listMs)}; GET /v1/status ${report(statusMs)}; ` +
        `GET /v1/commands/<id> ${report(itemMs)}; bursts of 16 list GETs ${burstMs.length ? report(burstMs) : 'none'}`,
    );
    expect(statusMs.length).toBeGreaterThanOrEqual(20);
    for (const xs of [listMs, statusMs, itemMs]) {
      expect(quantile(xs, 0.5)).toBeLessThan(50);
      expect(quantile(xs, 0.95)).toBeLessThan(200);
      expect(Math.max(...xs)).toBeLessThan(1000);
    }
    if (burstMs.length) expect(Math.max(...burstMs)).toBeLessThan(1000);

    const done = await get(url, `/v1/commands/${id}?wait=true`);
    expect(done.json).toEqual({
      id,
      command_name: 'execute_clean_step',
      command_status: 'SUCCEEDED',
      command_error: null,
      command_result: { clean_result: { [loop!.path]: null }, clean_step: erase.params.step },
    });
    // Only the erase was recorded; the agent takes commands again.
    expect(commands(await get(url, '/v1/commands/')).length).toBe(before + 1);
    const after = await postJson(url, '/v1/commands/', { name: 'standby.get_partition_uuids', params: {} });
    expect(after.status).toBe(200);
    // shred really ran with the requested iterations, on our device only.
    const shreds = (await commandsRun(agent!)).filter((c) => c.cmd === 'shred');
    expect(shreds.at(-1)!.args).toEqual(['--force', '--zero', '--verbose', '--iterations', '3', loop!.path]);
  });

  it('simulates power_off with --power none without touching the clock', async () => {
    const res = await postJson(url, '/v1/commands/?wait=true', { name: 'standby.power_off', params: {} });
    expect(expectResultObject(res.json)).toMatchObject({ command_name: 'power_off', command_status: 'SUCCEEDED', command_result: null });
    await sleep(400); // the simulated power-off happens after the command ends
    expect(alive(agent!)).toBe(true);
    expect((await get(url, '/v1/status')).status).toBe(200);
    const ran = (await commandsRun(agent!)).map((c) => c.cmd);
    expect(ran).not.toContain('hwclock');
    expect(ran).not.toContain('ntpdate');
    expect(ran).not.toContain('poweroff');
  });
});

describe('a sync command that raises', () => {
  let agent: AgentProcess | undefined;
  afterAll(async () => {
    await stopAgent(agent);
  });

  it('is recorded FAILED under its full dotted name (standby.sync without a `sync` binary)', async () => {
    const emptyPath = await tempDir('ferrum-nopath-');
    agent = await startAgent({ args: [...BASE_ARGS], port: await freePort(), env: { PATH: emptyPath } });
    const res = await postJson(agent.url, '/v1/commands/', { name: 'standby.sync', params: {} });
    expect(res.status).toBe(200);
    const r = expectResultObject(res.json);
    expect(r).toMatchObject({
      command_name: 'standby.sync',
      command_status: 'FAILED',
      command_result: null,
      command_error: { type: 'CommandExecutionError', code: 500, message: 'Command execution failed' },
    });
    expect(commands(await get(agent.url, '/v1/commands/'))).toEqual([r]);
  });
});

describe('agent token (--agent-token)', () => {
  const TOKEN = 'ferrum-test-token-0123456789abcdef-XYZ';
  let loop: LoopDevice | undefined;
  let agent: AgentProcess | undefined;
  let url = '';
  const cmd = { name: 'standby.get_partition_uuids', params: {} };

  beforeAll(async () => {
    loop = await createLoopDevice(16);
    agent = await startAgent({ args: [...BASE_ARGS, '--devices', loop.path, '--agent-token', TOKEN], port: await freePort() });
    url = agent.url;
  });

  afterAll(async () => {
    await stopAgent(agent);
    await destroyLoop(loop);
  });

  it('refuses POSTs with a missing or wrong token (query or body) with 401 and records nothing', async () => {
    const attempts: Array<[string, unknown]> = [
      ['/v1/commands/', cmd],
      ['/v1/commands/?wait=true', cmd],
      ['/v1/commands/?agent_token=wrong', cmd],
      ['/v1/commands/?agent_token=', cmd],
      [`/v1/commands/?agent_token=${TOKEN}x`, cmd],
      [`/v1/commands/?agent_token=${TOKEN.slice(0, -1)}`, cmd],
      [`/v1/commands/?agent_token=${TOKEN.toUpperCase()}`, cmd],
      ['/commands/', { ...cmd, agent_token: 'wrong' }],
      ['/v1/commands', { ...cmd, agent_token: '' }],
      ['/v1/commands/', { ...cmd, agent_token: 42 }],
      // Destructive and read-only commands alike.
      ['/v1/commands/', cleanStep('erase_devices_metadata')],
      ['/v1/commands/?agent_token=nope', cleanStep('erase_devices')],
      ['/v1/commands/', { name: 'clean.get_clean_steps', params: {} }],
      ['/v1/commands/', { name: 'log.collect_system_logs', params: {} }],
    ];
    for (const [path, body] of attempts) {
      expectFault(await postJson(url, path, body), 401, '401 Unauthorized: Token invalid.');
    }
    // The body is checked before the token, as IPA does.
    expectFault(await postJson(url, '/v1/commands/?agent_token=wrong', '{broken'), 400);
    expect(commands(await get(url, '/v1/commands/'))).toEqual([]);
    // Nothing ran: the disk still has no partition table written by an erase (shred/wipefs never ran).
    expect(await agent!.log()).not.toMatch(/overwriting disk|wiping signatures/);
  });

  it('accepts the right token in the query or the body', async () => {
    const a = await postJson(url, `/v1/commands/?agent_token=${TOKEN}`, cmd);
    expect(a.status).toBe(200);
    expect(expectResultObject(a.json)['command_status']).toBe('SUCCEEDED');
    const b = await postJson(url, '/v1/commands/', { ...cmd, agent_token: TOKEN });
    expect(b.status).toBe(200);
    const c = await postJson(url, `/v1/commands/?wait=true&agent_token=${encodeURIComponent(TOKEN)}`, cleanStep('no_such_step'));
    expect(expectResultObject(c.json)['command_status']).toBe('FAILED');
    expect(commands(await get(url, '/v1/commands/')).length).toBe(3);
  });

  it('answers GETs without a token, refuses a wrong one with 401', async () => {
    const list = commands(await get(url, '/v1/commands/'));
    const id = list[0]!['id'] as string;
    expect((await get(url, '/v1/commands/')).status).toBe(200);
    expect((await get(url, `/v1/commands/${id}`)).status).toBe(200);
    expect((await get(url, `/v1/commands/?agent_token=${TOKEN}`)).status).toBe(200);
    expect((await get(url, `/commands/${id}?agent_token=${TOKEN}`)).status).toBe(200);
    expectFault(await get(url, '/v1/commands/?agent_token=wrong'), 401, '401 Unauthorized: Token invalid.');
    expectFault(await get(url, '/commands?agent_token=wrong'), 401, '401 Unauthorized: Token invalid.');
    expectFault(await get(url, `/v1/commands/${id}?agent_token=wrong`), 401, '401 Unauthorized: Token invalid.');
    expectFault(await get(url, `/v1/commands/${id}?wait=true&agent_token=`), 401, '401 Unauthorized: Token invalid.');
    // Discovery and status never need one (the 2023.1 conductor sends none).
    expect((await get(url, '/v1/status?agent_token=wrong')).status).toBe(200);
    expect((await get(url, '/')).status).toBe(200);
  });
});
