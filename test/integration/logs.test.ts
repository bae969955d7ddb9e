// log.collect_system_logs of a real agent process (agent-protocol.md §6): base64 of a gzipped tar
// holding the agent's own log from this run, dmesg and the diagnostic command outputs; when tools
// are missing the entries say so and the command still succeeds.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gunzipSync } from 'node:zlib';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { extract } from 'tar-stream';
import { createLoopDevice, sh, type LoopDevice } from '../helpers/loop-device.js';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { AGENT_MAIN, freePort, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { AgentClient } from '../../src/conductor/agent-client.js';
import { BASE_ARGS, destroyLoop, expectResultObject, get, postJson, removeTempDirs, stopAgent, tempDir, waitFor, writeFixture } from './support.js';

interface TarEntry {
  name: string;
  type: string;
  mode: number;
  text: string;
}

async function untar(tgz: Buffer): Promise<Map<string, TarEntry>> {
  const entries = new Map<string, TarEntry>();
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        entries.set(header.name, { name: header.name, type: header.type ?? 'file', mode: header.mode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        next();
      });
      stream.resume();
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  ex.end(gunzipSync(tgz));
  await done;
  return entries;
}

const EXPECTED_SOURCES = ['journal', 'dmesg', 'ip_addr', 'ip_route', 'lsblk', 'lshw', 'lspci', 'multipath'];
const EXPECTED_FILES = ['mdstat', 'cmdline', 'meminfo'];

afterAll(removeTempDirs);

describe('log.collect_system_logs', () => {
  let loop: LoopDevice | undefined;
  let agent: AgentProcess | undefined;
  let client: AgentClient | undefined;

  beforeAll(async () => {
    loop = await createLoopDevice(16);
    agent = await startAgent({ args: [...BASE_ARGS, '--devices', loop.path], port: await freePort() });
    client = new AgentClient({ url: agent.url, pollIntervalMs: 100 });
  });

  afterAll(async () => {
    await client?.close();
    await stopAgent(agent);
    await destroyLoop(loop);
  });

  it('returns base64 of a tar.gz with the agent log of this run, dmesg and command outputs', async () => {
    // Something of this run to find in the agent's log: a command and its id.
    const earlier = await postJson(agent!.url, '/v1/commands/', { name: 'clean.get_clean_steps', params: { node: { uuid: 'n-logs' }, ports: [] } });
    const earlierId = expectResultObject(earlier.json)['id'] as string;

    const raw = await postJson(agent!.url, '/v1/commands/', { name: 'log.collect_system_logs', params: {} });
    expect(raw.status).toBe(200);
    const record = expectResultObject(raw.json);
    expect(record).toMatchObject({ command_name: 'collect_system_logs', command_status: 'SUCCEEDED', command_error: null });
    const result = record['command_result'] as Record<string, unknown>;
    expect(Object.keys(result)).toEqual(['system_logs']);
    const b64 = result['system_logs'] as string;
    expect(b64).toMatch(/^[A-Za-z0-9+/]+={0,2}$/);
    const tgz = Buffer.from(b64, 'base64');
    expect(tgz.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b])); // gzip magic

    const entries = await untar(tgz);
    const names = [...entries.keys()];
    expect(names).toEqual(expect.arrayContaining(['ferrum-agent.log', ...EXPECTED_SOURCES, ...EXPECTED_FILES]));
    for (const e of entries.values()) expect(e.type, e.name).toBe('file');

    // The agent's own log: pino JSON lines from this very process.
    const own = entries.get('ferrum-agent.log')!.text;
    expect(own).toContain('Ferrum agent starting');
    expect(own).toContain(earlierId);
    expect(own).toContain(`"devices":["${loop!.path}"]`);
    for (const line of own.split('\n').filter((l) => l !== '')) expect(() => JSON.parse(line)).not.toThrow();

    // dmesg: the kernel ring buffer, or an explanation why it could not be read.
    const dmesg = entries.get('dmesg')!.text;
    const dmesgDirect = await sh('dmesg', []);
    if (dmesgDirect.code === 0 && dmesgDirect.stdout.trim() !== '') expect(dmesg).toMatch(/^\[\s*\d+\.\d+\]/m);
    else expect(dmesg).toMatch(/exit code|not installed/);

    // Command outputs are really those of the commands.
    expect(entries.get('lsblk')!.text).toMatch(/NAME\s+MAJ:MIN/);
    expect(entries.get('ip_addr')!.text).toMatch(/\blo\b/);
    const cmdline = await sh('cat', ['/proc/cmdline']);
    expect(entries.get('cmdline')!.text).toBe(cmdline.stdout);
    expect(entries.get('meminfo')!.text).toMatch(/^MemTotal:/m);

    // Limited to --devices, the agent shares its host: the host's processes and mounts stay out.
    for (const hostOnly of ['ps', 'mount', 'df', 'parted']) expect(names).not.toContain(hostOnly);

    // The same archive through tar(1).
    const dir = await tempDir('ferrum-logs-');
    await writeFile(join(dir, 'logs.tgz'), tgz);
    const listed = await sh('tar', ['-tzf', join(dir, 'logs.tgz')]);
    expect(listed.code).toBe(0);
    expect(listed.stdout.trim().split('\n').sort()).toEqual(names.sort());
  });

  it('is available through the typed client', async () => {
    const res = await client!.collectSystemLogs();
    const entries = await untar(Buffer.from(res.system_logs, 'base64'));
    expect(entries.get('ferrum-agent.log')!.text).toContain('command log.collect_system_logs done');
  });
});

describe('log.collect_system_logs with tools missing', () => {
  let agent: AgentProcess | undefined;

  afterAll(async () => {
    await stopAgent(agent);
  });

  it('still succeeds; each entry explains what was missing', async () => {
    // No tool on PATH at all, and a fixture /proc without mdstat or meminfo. Only logs are collected.
    const emptyBin = await tempDir('ferrum-nobin-');
    const root = await tempDir('ferrum-sysroot-');
    await writeFixture(root, 'proc/cmdline', 'BOOTIF=01-52-54-00-12-34-56 ipa-debug=1\n');
    await writeFixture(root, 'proc/mounts', '/dev/vda / ext4 rw 0 0\n');
    agent = await startAgent({ args: [...BASE_ARGS, '--sys-root', root], port: await freePort(), env: { PATH: emptyBin } });

    const raw = await postJson(agent.url, '/v1/commands/', { name: 'log.collect_system_logs', params: {} });
    const record = expectResultObject(raw.json);
    expect(record['command_status']).toBe('SUCCEEDED');
    const entries = await untar(Buffer.from((record['command_result'] as { system_logs: string }).system_logs, 'base64'));

    const tools: Record<string, string> = {
      journal: 'journalctl',
      dmesg: 'dmesg',
      df: 'df',
      ip_addr: 'ip',
      ip_route: 'ip',
      lsblk: 'lsblk',
      lshw: 'lshw',
      lspci: 'lspci',
      mount: 'mount',
      parted: 'parted',
      ps: 'ps',
      multipath: 'multipath',
    };
    for (const [file, tool] of Object.entries(tools)) {
      expect(entries.get(file)?.text, file).toBe(`${tool}: not installed\n`);
    }
    expect(entries.get('mdstat')!.text).toBe('/proc/mdstat: not readable\n');
    expect(entries.get('meminfo')!.text).toBe('/proc/meminfo: not readable\n');
    expect(entries.get('cmdline')!.text).toBe('BOOTIF=01-52-54-00-12-34-56 ipa-debug=1\n');
    expect(entries.get('ferrum-agent.log')!.text).toContain('Ferrum agent starting');
  });
});

describe('when stdout goes away', () => {
  it('keeps serving and logging into the archive, and still stops on SIGTERM', async () => {
    // The reader of stdout (journal, pipe) disappears after the first line: writes now fail with
    // EPIPE. That must neither take the agent down nor make it spin.
    const port = await freePort();
    const stateDir = await tempDir('ferrum-epipe-');
    const proc = spawn(process.execPath, [AGENT_MAIN, ...BASE_ARGS, '--listen-host', '127.0.0.1', '--listen-port', String(port), '--state-dir', stateDir], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    try {
      proc.stdout!.once('data', () => proc.stdout!.destroy());
      const url = `http://127.0.0.1:${port}`;
      await waitFor(async () => (await get(url, '/v1/status').catch(() => ({ status: 0 }))).status === 200, 'the API', 20_000);
      await sleep(200);
      for (let i = 0; i < 5; i++) {
        const res = await postJson(url, '/v1/commands/', { name: 'clean.get_clean_steps', params: {} });
        expect(res.status).toBe(200);
      }
      const after = expectResultObject((await postJson(url, '/v1/commands/', { name: 'standby.get_partition_uuids', params: {} })).json);
      const logs = expectResultObject((await postJson(url, '/v1/commands/', { name: 'log.collect_system_logs', params: {} })).json);
      const entries = await untar(Buffer.from((logs['command_result'] as { system_logs: string }).system_logs, 'base64'));
      expect(entries.get('ferrum-agent.log')!.text).toContain(after['id'] as string);
      // Not busy-looping: the process sleeps between requests.
      const { readFile } = await import('node:fs/promises');
      const cpu = async () => {
        const f = (await readFile(`/proc/${proc.pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
        return Number(f[11]) + Number(f[12]); // utime + stime, in clock ticks
      };
      const before = await cpu();
      await sleep(1000);
      expect((await cpu()) - before).toBeLessThan(50); // < 0.5 s of CPU in 1 s
      const exited = once(proc, 'exit');
      proc.kill('SIGTERM');
      const [code] = (await Promise.race([exited, sleep(10_000).then(() => ['timeout'])])) as [number | string | null];
      expect(code).toBe(0);
    } finally {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    }
  });
});
