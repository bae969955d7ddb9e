// Shared by the integration tests: raw HTTP (any method, any path, exact bytes), fault-body checks,
// loop-device preparation and process memory. Every destructive helper takes a LoopDevice the test
// created itself, so nothing here can name a disk of the machine.
import http from 'node:http';
import net from 'node:net';
import { readFile, writeFile, mkdtemp } from 'node:fs/promises';
import { openSync, closeSync, writeSync, readdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import { sh, type LoopDevice } from '../helpers/loop-device.js';
export { readAt } from '../helpers/device-read.js';
import type { AgentProcess } from '../helpers/agent-process.js';

/** Flags every test agent gets: no conductor, simulated power, nothing read from this machine's kernel command line. */
export const BASE_ARGS = ['--standalone', '--power', 'none', '--cmdline-file', '/dev/null'];

/** IPA's result object keys, exactly. */
export const RESULT_KEYS = ['command_error', 'command_name', 'command_result', 'command_status', 'id'];

export const NOT_FOUND_FAULT =
  '404 Not Found: The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.';
export const METHOD_NOT_ALLOWED_FAULT = '405 Method Not Allowed: The method is not allowed for the requested URL.';

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** Parsed body, or undefined when it is not JSON. */
  json: unknown;
  ms: number;
}

export interface HttpRequest {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  timeoutMs?: number;
  agent?: http.Agent;
}

/** One HTTP request with node:http: no method restrictions, no path normalisation. */
export function httpRequest(baseUrl: string, r: HttpRequest): Promise<HttpAnswer> {
  const u = new URL(baseUrl);
  const started = performance.now();
  const headers: Record<string, string> = { ...r.headers };
  // node only frames bodies of POST/PUT/PATCH by itself; a DELETE/OPTIONS body must be announced.
  if (r.body !== undefined && !Object.keys(headers).some((h) => /^(content-length|transfer-encoding)$/i.test(h))) {
    headers['content-length'] = String(Buffer.byteLength(r.body));
  }
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: u.hostname,
        port: Number(u.port),
        method: r.method ?? 'GET',
        path: r.path,
        headers,
        agent: r.agent ?? false,
        timeout: r.timeoutMs ?? 30_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json, ms: performance.now() - started });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`request ${r.method ?? 'GET'} ${r.path.slice(0, 100)} timed out`)));
    req.on('error', reject);
    req.end(r.body);
  });
}

export const get = (base: string, path: string, headers?: Record<string, string>) => httpRequest(base, { path, headers });

export const postJson = (base: string, path: string, body: unknown) =>
  httpRequest(base, {
    method: 'POST',
    path,
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

/** Asserts a {faultcode, faultstring} body (exactly these keys) with the given status. */
export function expectFault(res: HttpAnswer, status: number, faultstring?: string | RegExp): void {
  expect(res.status, res.text.slice(0, 300)).toBe(status);
  expect(res.json, res.text.slice(0, 300)).toBeTypeOf('object');
  const body = res.json as Record<string, unknown>;
  expect(Object.keys(body).sort()).toEqual(['faultcode', 'faultstring']);
  expect(body['faultcode']).toBe(status >= 500 ? 'Server' : 'Client');
  expect(body['faultstring']).toBeTypeOf('string');
  if (typeof faultstring === 'string') expect(body['faultstring']).toBe(faultstring);
  else if (faultstring) expect(body['faultstring']).toMatch(faultstring);
}

/** True for a {faultcode, faultstring} body with nothing else. */
export function isFaultBody(json: unknown, status: number): boolean {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return false;
  const o = json as Record<string, unknown>;
  const keys = Object.keys(o).sort();
  return (
    keys.length === 2 &&
    keys[0] === 'faultcode' &&
    keys[1] === 'faultstring' &&
    o['faultcode'] === (status >= 500 ? 'Server' : 'Client') &&
    typeof o['faultstring'] === 'string'
  );
}

export function expectResultObject(json: unknown): Record<string, unknown> {
  expect(json).toBeTypeOf('object');
  const o = json as Record<string, unknown>;
  expect(Object.keys(o).sort()).toEqual(RESULT_KEYS);
  expect(o['id']).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  return o;
}

export interface RawAnswer {
  /** Everything the server sent before closing (latin1). */
  data: string;
  closed: boolean;
}

/** Writes bytes on a fresh TCP connection and collects what comes back until close or timeout. */
export function rawExchange(
  port: number,
  payload: Buffer | string | Array<Buffer | string>,
  opts: { endAfterWrite?: boolean; timeoutMs?: number } = {},
): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closed = false;
    const finish = () => resolve({ data: Buffer.concat(chunks).toString('latin1'), closed });
    const timer = setTimeout(() => {
      s.destroy();
    }, opts.timeoutMs ?? 5000);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => undefined);
    s.on('close', () => {
      closed = true;
      clearTimeout(timer);
      finish();
    });
    s.on('connect', () => {
      const parts = Array.isArray(payload) ? payload : [payload];
      for (const p of parts) s.write(p);
      if (opts.endAfterWrite !== false) s.end();
    });
  });
}

/** Parses the first HTTP response out of raw bytes: status and JSON body (by Content-Length). */
export function parseRawResponse(data: string): { status: number; body: unknown; text: string } | null {
  const m = /^HTTP\/1\.[01] (\d{3}) [^\r\n]*\r\n/.exec(data);
  if (!m) return null;
  const headerEnd = data.indexOf('\r\n\r\n');
  if (headerEnd < 0) return null;
  const head = data.slice(0, headerEnd);
  const len = /\r\ncontent-length: *(\d+)/i.exec(head);
  const rest = data.slice(headerEnd + 4);
  const text = len ? rest.slice(0, Number(len[1])) : rest;
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(text, 'latin1').toString('utf8'));
  } catch {
    body = undefined;
  }
  return { status: Number(m[1]), body, text };
}

/** Resident set size of a process in KiB (/proc/<pid>/status VmRSS). */
export async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

export function alive(agent: AgentProcess): boolean {
  return agent.proc.exitCode === null && agent.proc.signalCode === null;
}

/** Mulberry32: small, fast, seedable. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------------
// Loop devices

function assertLoop(dev: LoopDevice): void {
  // Belt and braces: these helpers write, so they only ever accept a loop device made by the test.
  if (!/^\/dev\/loop\d+$/.test(dev.path)) throw new Error(`refusing to touch ${dev.path}: not a loop device`);
}

export async function run(cmd: string, args: string[], env?: Record<string, string>): Promise<string> {
  if (env) {
    const { execFile } = await import('node:child_process');
    return new Promise((resolve, reject) =>
      execFile(cmd, args, { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
      ),
    );
  }
  const res = await sh(cmd, args);
  if (res.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${res.code}: ${res.stderr}`);
  return res.stdout;
}

/** Partition device nodes the kernel currently has for a loop device (/dev/loopNpX and /sys). */
export function partitionNodes(dev: LoopDevice): string[] {
  const name = basename(dev.path);
  const inDev = readdirSync('/dev').filter((n) => n.startsWith(`${name}p`));
  let inSys: string[] = [];
  try {
    inSys = readdirSync(`/sys/block/${name}`).filter((n) => n.startsWith(`${name}p`));
  } catch {
    inSys = [];
  }
  return [...new Set([...inDev, ...inSys])].sort();
}

/** Drops the kernel's partitions of a loop device (no write to the disk), so detaching leaves nothing behind. */
export async function forgetPartitions(dev: LoopDevice): Promise<void> {
  assertLoop(dev);
  if (partitionNodes(dev).length > 0) await sh('partx', ['-d', dev.path]);
}

export async function destroyLoop(dev: LoopDevice | undefined): Promise<void> {
  if (!dev) return;
  await forgetPartitions(dev).catch(() => undefined);
  await dev.destroy();
}

export function writeAt(dev: LoopDevice, offset: number, data: Buffer): void {
  assertLoop(dev);
  const fd = openSync(dev.path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

export const PATTERN_UNIT = Buffer.from('FERRUM-TEST-PATTERN-0123456789abcdef\n');

export function pattern(bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let o = 0; o < bytes; o += PATTERN_UNIT.length) PATTERN_UNIT.copy(out, o);
  return out;
}

/** sha256 of a whole device, read through the page cache (after the writer's fsync). */
export async function deviceHash(path: string): Promise<string> {
  const { createReadStream } = await import('node:fs');
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Counts non-zero bytes of a whole device (0 = all zeros). */
export async function nonZeroBytes(path: string): Promise<number> {
  const { createReadStream } = await import('node:fs');
  let count = 0;
  const zeros = Buffer.alloc(4 * 1024 * 1024);
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) {
    const b = chunk as Buffer;
    if (b.equals(zeros.subarray(0, b.length))) continue;
    // Fast path: compare 8 bytes at a time.
    const words = Math.floor(b.length / 8);
    for (let i = 0; i < words; i++) {
      if (b.readBigUInt64LE(i * 8) !== 0n) for (let j = i * 8; j < i * 8 + 8; j++) if (b[j] !== 0) count++;
    }
    for (let j = words * 8; j < b.length; j++) if (b[j] !== 0) count++;
  }
  return count;
}

/** Byte offset of the first occurrence of the test pattern in a device, or -1. */
export async function findPattern(path: string): Promise<number> {
  const { createReadStream } = await import('node:fs');
  let offset = 0;
  let carry = Buffer.alloc(0);
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) {
    const b = Buffer.concat([carry, chunk as Buffer]);
    const i = b.indexOf(PATTERN_UNIT);
    if (i >= 0) return offset - carry.length + i;
    carry = b.subarray(Math.max(0, b.length - PATTERN_UNIT.length));
    offset += (chunk as Buffer).length;
  }
  return -1;
}

/** A Linux md v0.90 superblock (what an old mdadm array member carries) at the end of a region. */
export function mdSuperblock090(): Buffer {
  const b = Buffer.alloc(4096);
  b.writeUInt32LE(0xa92b4efc, 0); // md_magic
  b.writeUInt32LE(0, 4); // major 0
  b.writeUInt32LE(90, 8); // minor 90
  b.writeUInt32LE(0, 12); // patch
  b.writeUInt32LE(0xfe77a5e5, 20); // set_uuid0
  b.writeUInt32LE(1, 28); // level 1
  b.writeUInt32LE(2, 36); // nr_disks
  b.writeUInt32LE(2, 40); // raid_disks
  return b;
}

/** md 0.90 superblock offset inside a region of `size` bytes. */
export function md090Offset(size: number): number {
  return (size - (size % 0x10000)) - 0x10000;
}

export interface PreparedDisk {
  /** Partition start/size in bytes, in partition-number order. */
  partitions: Array<{ start: number; size: number; fstype: string }>;
  /** Offset of the known pattern in the data area. */
  patternOffset: number;
}

const SECTOR = 512;
const MiB = 1024 * 1024;

/**
 * Gives a (≥ 200 MiB) loop device a GPT with four partitions carrying ext4, xfs, vfat and an md
 * RAID member signature, plus 1 MiB of a known pattern at 8 MiB from the end of the data area.
 */
export async function prepareDisk(dev: LoopDevice): Promise<PreparedDisk> {
  assertLoop(dev);
  if (dev.sizeBytes < 200 * MiB) throw new Error('prepareDisk needs at least 200 MiB');
  await forgetPartitions(dev);
  await run('sgdisk', ['-Z', dev.path]).catch(() => undefined);
  await run('sgdisk', [
    '-n', '1:2048:+40M', '-t', '1:8300', '-c', '1:ferrum-ext4',
    '-n', '2:0:+100M', '-t', '2:8300', '-c', '2:ferrum-xfs',
    '-n', '3:0:+16M', '-t', '3:ef00', '-c', '3:ferrum-esp',
    '-n', '4:0:0', '-t', '4:fd00', '-c', '4:ferrum-raid',
    dev.path,
  ]);
  await run('partprobe', [dev.path]);
  await waitFor(() => partitionNodes(dev).length === 4, 'partitions to appear');
  const p = (n: number) => `${dev.path}p${n}`;
  await run('mkfs.ext4', ['-q', '-F', p(1)]);
  // mkfs.xfs refuses filesystems under 300 MB unless it believes it runs under xfstests.
  await run('mkfs.xfs', ['-q', '-f', p(2)], { TEST_DIR: tmpdir(), TEST_DEV: p(2), QA_CHECK_FS: '1' });
  await run('mkfs.vfat', [p(3)]);
  const parts: PreparedDisk['partitions'] = [];
  const fstypes = ['ext4', 'xfs', 'vfat', 'linux_raid_member'];
  for (let n = 1; n <= 4; n++) {
    const name = `${basename(dev.path)}p${n}`;
    const start = Number((await readFile(`/sys/block/${basename(dev.path)}/${name}/start`, 'utf8')).trim()) * SECTOR;
    const size = Number((await readFile(`/sys/block/${basename(dev.path)}/${name}/size`, 'utf8')).trim()) * SECTOR;
    parts.push({ start, size, fstype: fstypes[n - 1]! });
  }
  const p4 = parts[3]!;
  writeAt(dev, p4.start + md090Offset(p4.size), mdSuperblock090());
  const patternOffset = p4.start + 8 * MiB;
  writeAt(dev, patternOffset, pattern(MiB));
  await run('sync', []);
  return { partitions: parts, patternOffset };
}

export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** `wipefs -n` output lines (signatures found), header removed. */
export async function wipefsSignatures(path: string, extra: string[] = []): Promise<string[]> {
  const res = await sh('wipefs', ['-n', ...extra, path]);
  if (res.code !== 0) throw new Error(`wipefs -n ${path}: ${res.stderr}`);
  return res.stdout
    .split('\n')
    .slice(1)
    .filter((l) => l.trim() !== '');
}

/** Partition lines of `sgdisk -p`. */
export async function sgdiskPartitions(path: string): Promise<string[]> {
  const res = await sh('sgdisk', ['-p', path]);
  const lines = res.stdout.split('\n');
  const header = lines.findIndex((l) => /^Number\s+Start/.test(l));
  if (header < 0) throw new Error(`unexpected sgdisk -p output: ${res.stdout}${res.stderr}`);
  return lines.slice(header + 1).filter((l) => /^\s*\d+\s/.test(l));
}

const tempDirs = new Set<string>();

/** A fresh directory under the system temp dir, removed by removeTempDirs(). */
export async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export async function removeTempDirs(): Promise<void> {
  const { rm } = await import('node:fs/promises');
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  tempDirs.clear();
}

/** Stops an agent and removes the state/log directory startAgent made for it. */
export async function stopAgent(agent: AgentProcess | undefined): Promise<void> {
  if (!agent) return;
  await agent.stop();
  const { rm } = await import('node:fs/promises');
  const { dirname } = await import('node:path');
  const dir = dirname(agent.logFile);
  if (dir.startsWith(join(tmpdir(), 'ferrum-agent-'))) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
}

export async function writeFixture(dir: string, rel: string, text: string): Promise<void> {
  const { mkdir } = await import('node:fs/promises');
  const path = join(dir, rel);
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, text);
}

/** Commands the agent ran (from its --debug log). */
export async function commandsRun(agent: AgentProcess): Promise<Array<{ cmd: string; args: string[] }>> {
  return (await agent.logLines())
    .filter((l) => l['msg'] === 'ran command')
    .map((l) => ({ cmd: String(l['cmd']), args: (l['args'] as string[]) ?? [] }));
}
