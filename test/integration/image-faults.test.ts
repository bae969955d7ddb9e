// Image downloads under faults, end to end: a real agent process (--standalone, one loop device)
// driven through the conductor-side client's prepare_image, fed by an HTTP server that misbehaves
// on purpose (test/helpers/image-server.ts): dropped connections, a server that ignores Range,
// stalls, 404s, closed ports, wrong checksums, images bigger than the disk, mirrors, compressed
// images, checksum files — and the command API staying responsive with a progress report while a
// large image is written.
//
// The agent runs with --image-download-connection-retries 2, --image-download-connection-retry-interval 1
// and --image-download-connection-timeout 3, so every fault resolves within seconds.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createGzip, gzipSync } from 'node:zlib';
import { createWriteStream, readdirSync, readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient, AgentCommandError } from '../../src/conductor/agent-client.js';
import type { CommandError, CommandResult, ImageInfo } from '../../src/protocol/index.js';
import { freePort, startAgent, type AgentProcess, type LogLine } from '../helpers/agent-process.js';
import { createLoopDevice, sh, type LoopDevice } from '../helpers/loop-device.js';
import { startImageServer, type ImageServer } from '../helpers/image-server.js';
import { MiB, mbrSector, md5, must, patternImage, sha256, wholeDiskImage, type WholeDiskImage } from '../helpers/disk-images.js';
// @ts-expect-error -- a plain .mjs helper shared with the benchmarks
import { ramdiskNode } from '../../scripts/ramdisk-node.mjs';
import { destroyLoop, httpRequest, partitionNodes, readAt, removeTempDirs, stopAgent, tempDir, writeAt } from './support.js';

const DISK_MIB = 512;
const NODE_UUID = 'c0ffee00-1111-4222-8333-444455556666';
const CMD_TIMEOUT_MS = 240_000;


let disk: LoopDevice | undefined;
let agent: AgentProcess | undefined;
let client: AgentClient | undefined;
let server: ImageServer | undefined;
let dir = '';
let small: WholeDiskImage; // 16 MiB, MBR + ext4
let gptImage: WholeDiskImage; // 32 MiB, GPT + ext4

// ------------------------------------------------------------------------------------- helpers

function info(over: Partial<ImageInfo> & { urls: string[] }): ImageInfo {
  return {
    id: `img-${randomUUID().slice(0, 8)}`,
    disk_format: 'raw',
    container_format: 'bare',
    stream_raw_images: true,
    node_uuid: NODE_UUID,
    ...over,
  };
}

const withSha = (img: Buffer) => ({ os_hash_algo: 'sha256', os_hash_value: sha256(img) });

async function logLines(): Promise<LogLine[]> {
  return agent!.logLines();
}

async function agentLogTail(n = 30): Promise<string> {
  return (await agent!.log()).split('\n').slice(-n).join('\n');
}

/** prepare_image to completion; the agent's log tail is attached to any failure. */
async function prepare(i: ImageInfo): Promise<unknown> {
  try {
    return await client!.prepareImage(i, null, { timeoutMs: CMD_TIMEOUT_MS });
  } catch (err) {
    if (err instanceof AgentCommandError) throw err;
    throw new Error(`prepare_image did not complete: ${(err as Error).message}\n${await agentLogTail()}`);
  }
}

/** prepare_image that must fail: returns the command error. */
async function prepareFails(i: ImageInfo): Promise<CommandError> {
  const err = await prepare(i).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, 'prepare_image should have failed').toBeInstanceOf(AgentCommandError);
  const ce = (err as AgentCommandError).result.command_error;
  expect(ce).not.toBeNull();
  return ce!;
}

function deviceStartsWith(img: Buffer): boolean {
  return readAt(disk!.path, 0, img.length).equals(img);
}

/** sha256 of the whole device, read in 4 MiB pieces. */
function deviceSha(length = disk!.sizeBytes): string {
  const h = createHash('sha256');
  for (let off = 0; off < length; off += 4 * MiB) h.update(readAt(disk!.path, off, Math.min(4 * MiB, length - off)));
  return h.digest('hex');
}

/** Gives the disk a GPT with two partitions, ext4 on the second, and a known pattern in the middle. */
async function usedLookingDisk(): Promise<void> {
  if (partitionNodes(disk!).length > 0) await sh('partx', ['-d', disk!.path]);
  await must('sgdisk', ['-Z', disk!.path]).catch(() => undefined);
  await must('sgdisk', ['-n', '1:2048:+32M', '-t', '1:ef00', '-n', '2:0:+128M', '-t', '2:8300', disk!.path]);
  await must('partprobe', [disk!.path]);
  for (let i = 0; i < 100 && partitionNodes(disk!).length < 2; i++) await sleep(100);
  await must('mkfs.ext4', ['-q', '-F', '-L', 'before', `${disk!.path}p2`]);
  writeAt(disk!, 300 * MiB, Buffer.alloc(MiB, 0x5a));
  await must('sync', []);
}

/** No partition table, no signature a tool finds, no partitions in the kernel. */
async function expectNothingBootable(what: string): Promise<void> {
  const sg = await sh('sgdisk', ['-p', disk!.path]);
  expect(sg.stdout.split('\n').filter((l) => /^\s+\d+\s+\d+\s+\d+\s/.test(l)), `${what}: sgdisk -p lists no partitions`).toEqual([]);
  expect((await sh('wipefs', ['-n', disk!.path])).stdout.trim(), `${what}: wipefs -n finds nothing`).toBe('');
  const blkid = await sh('blkid', ['-p', disk!.path]);
  expect(blkid.code, `${what}: blkid -p finds nothing (${blkid.stdout.trim()})`).toBe(2);
  expect(partitionNodes(disk!), `${what}: no partition nodes left`).toEqual([]);
  expect(readAt(disk!.path, 510, 2).readUInt16LE(0), `${what}: no MBR boot signature`).not.toBe(0xaa55);
}

const ext4MagicAt = (offset: number) => readAt(disk!.path, offset + 1024 + 0x38, 2).readUInt16LE(0) === 0xef53;

function logged(lines: LogLine[], msg: string | RegExp): LogLine[] {
  return lines.filter((l) => typeof l.msg === 'string' && (typeof msg === 'string' ? l.msg === msg : msg.test(l.msg)));
}

// ------------------------------------------------------------------------------------ lifecycle

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('the image fault tests need root (loop devices)');
  for (const tool of ['sgdisk', 'sfdisk', 'mke2fs', 'partprobe', 'wipefs', 'blkid', 'qemu-img', 'xz', 'zstd']) {
    if ((await sh('sh', ['-c', `command -v ${tool}`])).code !== 0) throw new Error(`${tool} is missing: run scripts/install-deps.sh`);
  }
  dir = await tempDir('ferrum-imgfaults-');
  [small, gptImage] = await Promise.all([
    wholeDiskImage(dir, 'small', { sizeMiB: 16, label: 'dos', marker: 'ferrum small image\n' }),
    wholeDiskImage(dir, 'gpt', { sizeMiB: 32, label: 'gpt', marker: 'ferrum gpt image\n' }),
  ]);
  server = await startImageServer();
  disk = await createLoopDevice(DISK_MIB);
  agent = await startAgent({
    port: await freePort(),
    args: [...AGENT_ARGS, '--devices', disk.path],
  });
  client = new AgentClient({ url: agent.url, pollIntervalMs: 200, requestTimeoutMs: 30_000 });
  // The disk is smaller than the 4 GiB the no-hint choice wants: name it.
  await client.run('poll.set_node_info', { node_info: { uuid: NODE_UUID, instance_info: { root_device: { name: disk.path } } } });
});

afterAll(async () => {
  await client?.close();
  if (process.env['FERRUM_KEEP_TEST_STATE'] === '1') {
    await agent?.stop();
    console.error(`kept the agent's log: ${agent?.logFile}`);
  } else {
    await stopAgent(agent);
  }
  await destroyLoop(disk);
  await server?.close();
  await removeTempDirs();
});

/**
 * Where the plain-HTTP reader resumes a connection that broke at `offset`: it passes on whole 4 KiB
 * blocks of what it read (so the pool buffers after it stay aligned for direct I/O) and asks
 * again for the rest.
 */
const blockStart = (offset: number): number => offset - (offset % 4096);

/** The agent's threads now (the image pipeline's hashing thread is one while it exists). */
const agentThreads = (): number => readdirSync(`/proc/${agent!.proc.pid}/task`).length;

/** Waits until the agent has no more threads than `before` (a terminated worker goes within ms). */
async function threadsBackTo(before: number): Promise<number> {
  for (let i = 0; i < 60 && agentThreads() > before; i++) await sleep(50);
  return agentThreads();
}

// ---------------------------------------------------------------------------------------- tests

describe('image download faults (standby.prepare_image, whole-disk raw)', () => {
  it('a connection dropped 3 times mid-stream is resumed with Range requests; the bytes are right', async () => {
    const drops = [3 * MiB, 7 * MiB, 11 * MiB + 4321];
    const url = server!.add('drops.img', small.raw, { dropAt: drops, pauseAfterFirstChunkMs: 500 });
    const mark = (await logLines()).length;
    await prepare(info({ urls: [url], ...withSha(small.raw) }));

    expect(deviceStartsWith(small.raw), 'the device holds the image').toBe(true);
    const reqs = server!.requestsFor('drops.img').filter((r) => r.method === 'GET');
    expect(reqs.filter((r) => r.outcome === 'dropped').map((r) => r.start + r.bytesSent)).toEqual(drops);
    // Each resume asked for exactly the rest, guarded by If-Range, and got 206.
    const resumes = reqs.filter((r) => r.range !== null);
    expect(resumes.map((r) => r.range)).toEqual(drops.map((d) => `bytes=${blockStart(d)}-`));
    expect(resumes.every((r) => r.status === 206 && r.ifRange !== null)).toBe(true);
    expect(reqs.at(-1)!.outcome).toBe('complete');
    const log = (await logLines()).slice(mark);
    // The server drops each request at the next offset in turn: when the probe of the image's
    // first bytes is slow to hang up (a busy machine), it takes the first drop itself.
    const resumed = logged(log, 'resuming image download').map((l) => l['offset']);
    expect(resumed.length).toBeGreaterThanOrEqual(2);
    expect(drops.slice(-resumed.length).map(blockStart)).toEqual(resumed);
    // The write's answers were read by the plain-HTTP reader; only the probe of the first bytes,
    // which keeps its chunks, went through undici.
    const clients = logged(log, 'image server answered').filter((l) => String(l['url']).endsWith('/drops.img')).map((l) => l['client']);
    expect(clients.filter((c) => c === 'plain-http').length).toBeGreaterThanOrEqual(resumed.length + 1);
    expect(clients.filter((c) => c !== 'plain-http')).toEqual(['undici']);
  });

  it('a chunked answer (no Content-Length) is read through undici instead, drops resumed; the bytes are right', async () => {
    const drops = [5 * MiB, 10 * MiB];
    const url = server!.add('chunked.img', small.raw, { chunked: true, dropAt: drops, pauseAfterFirstChunkMs: 500 });
    const mark = (await logLines()).length;
    await prepare(info({ urls: [url], ...withSha(small.raw) }));
    expect(deviceStartsWith(small.raw), 'the device holds the image').toBe(true);
    const log = (await logLines()).slice(mark);
    const answered = logged(log, 'image server answered').filter((l) => String(l['url']).endsWith('/chunked.img'));
    // The plain reader hung up on each chunked answer, and undici asked again.
    expect(answered.length).toBeGreaterThanOrEqual(3);
    expect(new Set(answered.map((l) => l['client']))).toEqual(new Set(['undici']));
    const reqs = server!.requestsFor('chunked.img').filter((r) => r.method === 'GET');
    expect(reqs.filter((r) => r.outcome === 'dropped').map((r) => r.start + r.bytesSent)).toEqual(drops);
    expect(reqs.at(-1)!.outcome).toBe('complete');
  });

  it('a server that ignores Range (always 200) is re-read from the start and the delivered bytes skipped', async () => {
    const drops = [3 * MiB, 9 * MiB];
    const url = server!.add('norange.img', small.raw, { ignoreRange: true, dropAt: drops, pauseAfterFirstChunkMs: 500 });
    const mark = (await logLines()).length;
    await prepare(info({ urls: [url], ...withSha(small.raw) }));

    expect(deviceStartsWith(small.raw)).toBe(true);
    const reqs = server!.requestsFor('norange.img').filter((r) => r.method === 'GET');
    expect(reqs.every((r) => r.status === 200)).toBe(true);
    expect(reqs.filter((r) => r.range !== null).map((r) => r.range)).toEqual(drops.map((d) => `bytes=${d}-`));
    expect(reqs.filter((r) => r.outcome === 'dropped')).toHaveLength(2);
    expect(logged((await logLines()).slice(mark), 'resuming image download').map((l) => l['offset'])).toEqual(drops);
  });

  it('a wrong checksum fails with ImageChecksumError and leaves no partition table or signature', async () => {
    await usedLookingDisk();
    const url = server!.add('gpt-bad.img', gptImage.raw);
    const mark = (await logLines()).length;
    const err = await prepareFails(info({ urls: [url], os_hash_algo: 'sha256', os_hash_value: sha256('not this image') }));
    expect(err.type).toBe('ImageChecksumError');
    expect(err.details).toMatch(/Image failed to verify against checksum/);
    expect(err.details).toContain(`verification checksum: ${sha256(gptImage.raw)}`);

    // The image's bytes did reach the disk (past the wiped edge)...
    const probeAt = gptImage.partOffset + 2 * MiB;
    expect(readAt(disk!.path, probeAt, MiB).equals(gptImage.raw.subarray(probeAt, probeAt + MiB)), 'image data was written').toBe(true);
    // ...but nothing on it can be booted or mounted: no table, no signatures, not even the
    // image's ext4 superblock inside its (now forgotten) partition.
    await expectNothingBootable('after the checksum failure');
    expect(ext4MagicAt(gptImage.partOffset), 'the ext4 superblock of the image partition is wiped').toBe(false);
    const log = (await logLines()).slice(mark);
    expect(logged(log, 'image write failed; partition tables wiped').map((l) => l['attempt'])).toEqual([1, 2]);
    expect(logged(log, 'could not wipe the disk after a failed write')).toEqual([]);
  });

  it('a 404 fails with an ImageDownloadError naming the status, without touching the disk', async () => {
    await usedLookingDisk();
    const before = deviceSha();
    const url = `${server!.base}/missing.img`;
    const err = await prepareFails(info({ urls: [url], ...withSha(small.raw) }));
    expect(err.type).toBe('ImageDownloadError');
    expect(err.details).toContain(url);
    expect(err.details).toMatch(/HTTP 404/);
    expect(deviceSha()).toBe(before);
  });

  it('an unreachable server (closed port) fails clearly after the configured retries', async () => {
    const url = `http://127.0.0.1:${await freePort()}/nothing-listens.img`;
    const mark = (await logLines()).length;
    const t0 = Date.now();
    const err = await prepareFails(info({ urls: [url], ...withSha(small.raw) }));
    const secs = (Date.now() - t0) / 1000;
    expect(err.type).toBe('ImageDownloadError');
    expect(err.details).toContain(url);
    expect(err.details).toMatch(/ECONNREFUSED/);
    const log = (await logLines()).slice(mark);
    expect(logged(log, /^image download interrupted; retrying in 1 s/).map((l) => l['attempt'])).toEqual([1, 2]);
    expect(logged(log, 'giving up on this image URL')).toHaveLength(1);
    expect(secs, '2 retries, 1 s apart').toBeGreaterThanOrEqual(2);
  });

  it('a stalled connection is aborted by the watchdog and the download resumes', async () => {
    const stallAt = 2 * MiB + 512;
    const url = server!.add('stall-once.img', small.raw, { stallAt, stallMode: 'first', pauseAfterFirstChunkMs: 500 });
    const mark = (await logLines()).length;
    const t0 = Date.now();
    await prepare(info({ urls: [url], ...withSha(small.raw) }));
    expect(Date.now() - t0, 'the watchdog waited its 3 s').toBeGreaterThanOrEqual(3000);
    expect(deviceStartsWith(small.raw)).toBe(true);
    const reqs = server!.requestsFor('stall-once.img').filter((r) => r.method === 'GET');
    expect(reqs.filter((r) => r.outcome === 'stalled')).toHaveLength(1);
    expect(reqs.filter((r) => r.range !== null).map((r) => [r.range, r.status])).toEqual([[`bytes=${blockStart(stallAt)}-`, 206]]);
    const log = (await logLines()).slice(mark);
    expect(logged(log, /^image download interrupted/).map((l) => l['reason'])).toEqual(['no data for 3 s']);
    expect(logged(log, 'resuming image download').map((l) => l['offset'])).toEqual([blockStart(stallAt)]);
  });

  it('a server that stalls every time fails clearly after the retries, and its hashing thread ends', async () => {
    const url = server!.add('stall-always.img', small.raw, { stallAt: 2 * MiB, stallMode: 'always', pauseAfterFirstChunkMs: 500 });
    const threads = agentThreads();
    const err = await prepareFails(info({ urls: [url], ...withSha(small.raw) }));
    expect(await threadsBackTo(threads), 'no thread is left behind by the failed write').toBe(threads);
    expect(err.type).toBe('ImageDownloadError');
    expect(err.details).toContain(url);
    expect(err.details).toMatch(/no data for 3 s/);
    expect(server!.requestsFor('stall-always.img').filter((r) => r.outcome === 'stalled').length).toBe(3);
  });

  it('a raw image bigger than the disk (Content-Length) is refused before anything is written', async () => {
    await usedLookingDisk();
    const before = deviceSha();
    const big = patternImage((DISK_MIB + 88) * MiB, 7);
    const url = server!.add('too-big.img', big);
    const threads = agentThreads();
    const err = await prepareFails(info({ urls: [url], os_hash_algo: 'sha256', os_hash_value: 'a'.repeat(64) }));
    expect(await threadsBackTo(threads), 'the hashing thread started ahead ends with the refusal').toBe(threads);
    expect(err.type).toBe('ImageWriteError');
    expect(err.details).toMatch(new RegExp(`needs ${big.size} bytes but the device has ${disk!.sizeBytes}`));
    expect(deviceSha(), 'the disk is exactly as it was').toBe(before);
    expect(partitionNodes(disk!)).toHaveLength(2);
    const sent = server!.requestsFor('too-big.img').reduce((n, r) => n + r.bytesSent, 0);
    expect(sent, 'the image was not downloaded').toBeLessThan(64 * MiB);
  });

  it('a gzip image that turns out bigger than the disk fails clearly and leaves nothing bootable', async () => {
    await usedLookingDisk();
    // Mostly zeros (it compresses to little), an MBR in front and data at the very end.
    const size = (DISK_MIB + 64) * MiB;
    const file = join(dir, 'too-big.img.gz');
    async function* image(): AsyncGenerator<Buffer> {
      const first = Buffer.alloc(MiB);
      mbrSector(size).copy(first, 0);
      yield first;
      for (let off = MiB; off < size - MiB; off += MiB) yield Buffer.alloc(MiB);
      yield Buffer.alloc(MiB, 0x42);
    }
    await pipeline(Readable.from(image()), createGzip({ level: 1 }), createWriteStream(file));
    const packed = await readFile(file);
    const url = server!.add('too-big.img.gz', packed);
    const err = await prepareFails(info({ urls: [url], ...withSha(packed) }));
    expect(err.type).toBe('ImageWriteError');
    expect(err.details).toMatch(new RegExp(`the image needs \\d+ bytes but the device has ${disk!.sizeBytes}`));
    await expectNothingBootable('after the oversized gzip image');
  });

  it('a qcow2 image whose virtual size exceeds the disk is refused before anything is written', async () => {
    await usedLookingDisk();
    const before = deviceSha();
    const file = join(dir, 'huge.qcow2');
    await must('qemu-img', ['create', '-q', '-f', 'qcow2', file, `${DISK_MIB * 2}M`]);
    const qcow = await readFile(file);
    const url = server!.add('huge.qcow2', qcow);
    const err = await prepareFails(info({ urls: [url], disk_format: 'qcow2', ...withSha(qcow) }));
    expect(err.type).toBe('ImageWriteError');
    expect(err.details).toMatch(new RegExp(`needs ${DISK_MIB * 2 * MiB} bytes but the device has ${disk!.sizeBytes}`));
    expect(deviceSha()).toBe(before);
  });

  it('with several URLs, failing ones (404, closed port) are skipped and the next one is used', async () => {
    const good = server!.add('mirror-ok.img', small.raw);
    const dead = `http://127.0.0.1:${await freePort()}/small.img`;
    const missing = `${server!.base}/not-here/small.img`;
    const mark = (await logLines()).length;
    await prepare(info({ urls: [missing, dead, good], ...withSha(small.raw) }));
    expect(deviceStartsWith(small.raw)).toBe(true);
    expect(server!.requestsFor('mirror-ok.img').filter((r) => r.method === 'GET').every((r) => r.status === 200)).toBe(true);
    const log = (await logLines()).slice(mark);
    // Each failing URL was given up once (its retries spent once): the write went straight to the good one.
    expect(logged(log, 'giving up on this image URL').map((l) => l['url'])).toEqual([missing, dead]);
    expect(server!.requestsFor('not-here/small.img')).toHaveLength(1);
  });

  it('a mirror takes over mid-download (its ETag differs) and resumes where the first URL broke off', async () => {
    const breakAt = 5 * MiB;
    // The first URL breaks at the same offset every time: no progress, so it is given up.
    const first = server!.add('flaky.img', small.raw, { dropAt: [breakAt, breakAt, breakAt, breakAt], pauseAfterFirstChunkMs: 500, etag: '"flaky-etag"' });
    const mirror = server!.add('mirror/flaky.img', small.raw, { etag: '"mirror-etag"' });
    await prepare(info({ urls: [first, mirror], ...withSha(small.raw) }));
    expect(deviceStartsWith(small.raw)).toBe(true);
    const fromMirror = server!.requestsFor('mirror/flaky.img').filter((r) => r.method === 'GET');
    expect(fromMirror.map((r) => [r.range, r.status, r.outcome])).toEqual([[`bytes=${breakAt}-`, 206, 'complete']]);
  });

  it.each([
    ['gzip', (b: Buffer) => Promise.resolve(gzipSync(b))],
    ['xz', (b: Buffer) => compressWith('xz', ['-c', '-T0', '-3'], b)],
    ['zstd', (b: Buffer) => compressWith('zstd', ['-c', '-q', '-3'], b)],
  ] as const)('a %s-compressed raw image is decompressed on the fly', async (kind, compress) => {
    const packed = await compress(small.raw);
    expect(packed.length).toBeLessThan(small.raw.length);
    const url = server!.add(`small.img.${kind}`, packed);
    const mark = (await logLines()).length;
    await prepare(info({ urls: [url], ...withSha(packed) }));
    expect(deviceStartsWith(small.raw)).toBe(true);
    const detected = logged((await logLines()).slice(mark), 'image format detected');
    expect(detected.map((l) => [l['format'], l['compression']])).toEqual([['raw', kind]]);
  });

  it('the checksum may be the URL of a checksums file (sha256sum format, with other entries)', async () => {
    const url = server!.add('sums/small-a.img', small.raw);
    const sums = [`${sha256('other')}  other.img`, `${sha256(small.raw)} *small-a.img`, `${sha256('x')}  small-a.img.gz`, ''].join('\n');
    const sumsUrl = server!.add('sums/SHA256SUMS', Buffer.from(sums));
    await prepare(info({ urls: [url], checksum: sumsUrl }));
    expect(deviceStartsWith(small.raw)).toBe(true);
    expect(server!.requestsFor('sums/SHA256SUMS').filter((r) => r.method === 'GET').length).toBeGreaterThanOrEqual(1);
  });

  it('the checksum may be the URL of a BSD-style checksums file', async () => {
    const url = server!.add('bsd/small-b.img', small.raw);
    const sums = [`SHA256 (other.img) = ${sha256('other')}`, `SHA256 (small-b.img) = ${sha256(small.raw)}`, ''].join('\n');
    const sumsUrl = server!.add('bsd/CHECKSUM', Buffer.from(sums));
    await prepare(info({ urls: [url], checksum: sumsUrl }));
    expect(deviceStartsWith(small.raw)).toBe(true);
  });

  it('an md5 image checksum (image_checksum) is honoured', async () => {
    const url = server!.add('md5/small.img', small.raw);
    await prepare(info({ urls: [url], checksum: md5(small.raw) }));
    expect(deviceStartsWith(small.raw)).toBe(true);
  });

  it('while a large image is written, GET /v1/commands/ answers within 200 ms and shows the progress', async () => {
    const size = 256 * MiB;
    const big = patternImage(size, 3);
    const expected = big.sha256();
    // ~40 MiB/s: the write takes several seconds whatever the machine's disk speed.
    const url = server!.add('large.img', big, { rateBytesPerSec: 40 * MiB });
    const started = await client!.execute('standby.prepare_image', { image_info: info({ urls: [url], os_hash_algo: 'sha256', os_hash_value: expected }), configdrive: null });
    expect(started.command_status).toBe('RUNNING');

    // Each answer's time, minus the time the kernel kept the agent's or this test's thread
    // waiting for a CPU (schedstat): the machine may be busy with other work, but the agent itself
    // must never keep the API waiting.
    const agentStat = `/proc/${agent!.proc.pid}/task/${agent!.proc.pid}/schedstat`;
    const latencies: Array<{ raw: number; own: number; phase: unknown }> = [];
    const snapshots: Array<Record<string, unknown>> = [];
    let last: CommandResult | undefined;
    const deadline = Date.now() + CMD_TIMEOUT_MS;
    for (;;) {
      const before = runqueueWaitMs(agentStat) + runqueueWaitMs('/proc/thread-self/schedstat');
      const res = await httpRequest(agent!.url, { path: '/v1/commands/', timeoutMs: 10_000 });
      const waited = runqueueWaitMs(agentStat) + runqueueWaitMs('/proc/thread-self/schedstat') - before;
      expect(res.status).toBe(200);
      const list = (res.json as { commands: CommandResult[] }).commands;
      last = list.find((c) => c.id === started.id);
      expect(last, 'the command is listed').toBeDefined();
      const progress = (last!.command_result as { progress?: Record<string, unknown> } | null)?.progress;
      latencies.push({ raw: res.ms, own: Math.max(0, res.ms - waited), phase: progress?.['phase'] ?? last!.command_status });
      if (last!.command_status !== 'RUNNING') break;
      expect(progress, 'command_result.progress while RUNNING').toBeDefined();
      snapshots.push(progress!);
      if (Date.now() > deadline) throw new Error(`the large write did not finish: ${JSON.stringify(progress)}\n${await agentLogTail()}`);
      await sleep(100);
    }
    expect(last!.command_status, JSON.stringify(last!.command_error)).toBe('SUCCEEDED');

    const raw = latencies.map((l) => l.raw).sort((a, b) => a - b);
    const summary =
      `${latencies.length} GET /v1/commands/ during the write: median ${raw[Math.floor(raw.length / 2)]!.toFixed(1)} ms, max ${raw.at(-1)!.toFixed(1)} ms ` +
      `(max ${Math.max(...latencies.map((l) => l.own)).toFixed(1)} ms not counting CPU run-queue waits)`;
    console.info(summary);
    const slow = latencies.filter((l) => l.own >= 200);
    expect(slow, summary).toEqual([]);
    expect(raw[Math.floor(raw.length / 2)]!, summary).toBeLessThan(100);
    expect(snapshots.length).toBeGreaterThanOrEqual(10);
    const writing = snapshots.filter((p) => p['phase'] === 'writing');
    expect(writing.length).toBeGreaterThanOrEqual(5);
    for (const p of writing) {
      expect(p['bytes_total']).toBe(size);
      expect(typeof p['bytes_done']).toBe('number');
      expect(typeof p['rate_bytes_per_s']).toBe('number');
      expect(p).toHaveProperty('eta_s');
    }
    const done = writing.map((p) => p['bytes_done'] as number);
    expect(done.every((d, i) => i === 0 || d >= done[i - 1]!), 'bytes_done never goes back').toBe(true);
    expect(done.at(-1)!).toBeGreaterThan(done[0]!);
    const mid = writing[Math.floor(writing.length / 2)]!;
    expect(mid['rate_bytes_per_s'] as number).toBeGreaterThan(0);
    expect(typeof mid['eta_s']).toBe('number');
    expect(deviceSha(size), 'the device holds the image').toBe(expected);
  });
});

// The ramdisk runs Node 24, whose zlib has zstd: there the agent decompresses zstd on its hash
// worker (src/agent/image/zstd-worker.ts) instead of a `zstd -dc` subprocess. The same agent,
// restarted on that Node, against the same disk and image server.
describe('zstd images on the ramdisk\'s Node.js (zstd on the hash worker)', () => {
  beforeAll(async () => {
    await restartAgent({ node: ((await ramdiskNode({ fallback: false })) as { path: string }).path });
  }, 180_000);

  it('a zstd image whose download drops mid-stream is resumed and decompressed on the hash worker; the bytes are right', async () => {
    const image = withRandomTail();
    const packed = await compressWith('zstd', ['-c', '-q', '-3'], image);
    const drops = [1, 2, 3].map((q) => Math.floor((q * packed.length) / 4) + q);
    const url = server!.add('random-tail.img.zst', packed, { dropAt: drops, pauseAfterFirstChunkMs: 300 });
    const mark = (await logLines()).length;
    await prepare(info({ urls: [url], ...withSha(packed) }));
    expect(deviceStartsWith(image)).toBe(true);
    const log = (await logLines()).slice(mark);
    expect(logged(log, 'image format detected').map((l) => [l['format'], l['compression'], l['decompressor']])).toEqual([['raw', 'zstd', 'zlib zstd on the hash worker']]);
    // The server drops each request at the next offset in turn: when the probe of the image's
    // first bytes is slow to hang up (a busy machine), it takes the first drop itself.
    const resumed = logged(log, 'resuming image download').map((l) => l['offset']);
    expect(resumed.length).toBeGreaterThanOrEqual(2);
    expect(drops.slice(-resumed.length).map(blockStart)).toEqual(resumed);
  });

  it.each([
    ['truncated', (z: Buffer) => z.subarray(0, z.length - 4096), /zstd decompression failed: unexpected end of file/],
    ['corrupt inside a block (only the frame checksum tells)', (z: Buffer) => flipByte(z, Math.floor(z.length / 2)), /zstd decompression failed: .*checksum/i],
    ['followed by bytes that are not zstd', (z: Buffer) => Buffer.concat([z, Buffer.from('trailing garbage')]), /zstd decompression failed: unknown frame descriptor/],
  ] as const)('a zstd stream %s (its checksum as served matches) fails clearly and leaves nothing bootable', async (_what, spoil, why) => {
    await usedLookingDisk();
    const packed = spoil(await compressWith('zstd', ['-c', '-q', '-3'], withRandomTail()));
    const url = server!.add(`spoilt-${randomUUID().slice(0, 8)}.img.zst`, packed);
    const err = await prepareFails(info({ urls: [url], ...withSha(packed) }));
    expect(err.type).toBe('ImageWriteError');
    expect(err.details).toMatch(why);
    await expectNothingBootable('after a bad zstd stream');
  });
});

// ferrum-image-http-client=undici: every image download through undici, as before the plain-HTTP
// reader, for a server or network where that reader misbehaves. The same faults must be survived.
describe('image downloads through undici only (--image-http-client undici)', () => {
  beforeAll(async () => {
    await restartAgent({ args: ['--image-http-client', 'undici'] });
  }, 60_000);

  it('a connection dropped 3 times mid-stream is resumed with Range requests; the bytes are right', async () => {
    const drops = [3 * MiB, 7 * MiB, 11 * MiB + 4321];
    const url = server!.add('drops-undici.img', small.raw, { dropAt: drops, pauseAfterFirstChunkMs: 500 });
    const mark = (await logLines()).length;
    await prepare(info({ urls: [url], ...withSha(small.raw) }));
    expect(deviceStartsWith(small.raw), 'the device holds the image').toBe(true);
    const reqs = server!.requestsFor('drops-undici.img').filter((r) => r.method === 'GET');
    expect(reqs.filter((r) => r.outcome === 'dropped').map((r) => r.start + r.bytesSent)).toEqual(drops);
    const log = (await logLines()).slice(mark);
    expect(logged(log, 'resuming image download').length).toBeGreaterThanOrEqual(2);
    const answered = logged(log, 'image server answered').filter((l) => String(l['url']).endsWith('/drops-undici.img'));
    expect(new Set(answered.map((l) => l['client']))).toEqual(new Set(['undici']));
  });

  it('a stalled connection is aborted by the watchdog and the download resumes', async () => {
    const url = server!.add('stall-undici.img', small.raw, { stallAt: 6 * MiB, stallMode: 'first', pauseAfterFirstChunkMs: 500 });
    await prepare(info({ urls: [url], ...withSha(small.raw) }));
    expect(deviceStartsWith(small.raw)).toBe(true);
    const reqs = server!.requestsFor('stall-undici.img').filter((r) => r.method === 'GET');
    expect(reqs.some((r) => r.outcome === 'stalled')).toBe(true);
    expect(reqs.at(-1)!.outcome).toBe('complete');
  });
});

// HTTPS image servers (Swift temp URLs, an https Glance) are read by the same reader over TLS.
describe('an https image server (self-signed; the agent runs with ipa-insecure)', () => {
  let tlsServer: ImageServer | undefined;
  beforeAll(async () => {
    const certDir = await tempDir('ferrum-imgfaults-tls-');
    const [key, cert] = [join(certDir, 'k.pem'), join(certDir, 'c.pem')];
    await must('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert]);
    tlsServer = await startImageServer('127.0.0.1', 0, { key: await readFile(key), cert: await readFile(cert) });
    await restartAgent({ args: ['--insecure'] });
  }, 60_000);
  afterAll(async () => {
    await tlsServer?.close();
  });

  it('a connection dropped twice mid-stream is resumed over TLS by the plain-HTTP reader; the bytes are right', async () => {
    const drops = [4 * MiB, 9 * MiB + 77];
    const url = tlsServer!.add('drops-tls.img', small.raw, { dropAt: drops, pauseAfterFirstChunkMs: 500 });
    expect(url.startsWith('https://')).toBe(true);
    const mark = (await logLines()).length;
    await prepare(info({ urls: [url], ...withSha(small.raw) }));
    expect(deviceStartsWith(small.raw), 'the device holds the image').toBe(true);
    const reqs = tlsServer!.requestsFor('drops-tls.img').filter((r) => r.method === 'GET');
    expect(reqs.filter((r) => r.outcome === 'dropped').map((r) => r.start + r.bytesSent)).toEqual(drops);
    expect(reqs.at(-1)!.outcome).toBe('complete');
    const log = (await logLines()).slice(mark);
    const clients = logged(log, 'image server answered').filter((l) => String(l['url']).endsWith('/drops-tls.img')).map((l) => l['client']);
    expect(clients.filter((c) => c === 'plain-http').length).toBeGreaterThanOrEqual(2);
    expect(clients.filter((c) => c !== 'plain-http')).toEqual(['undici']); // the probe
  });
});

/** The same agent started again (same disk and image server) on another Node.js or with more flags. */
async function restartAgent(o: { node?: string; args?: string[] }): Promise<void> {
  await client?.close();
  await stopAgent(agent);
  agent = await startAgent({ port: await freePort(), ...(o.node ? { node: o.node } : {}), args: [...AGENT_ARGS, ...(o.args ?? []), '--devices', disk!.path] });
  client = new AgentClient({ url: agent.url, pollIntervalMs: 200, requestTimeoutMs: 30_000 });
  await client.run('poll.set_node_info', { node_info: { uuid: NODE_UUID, instance_info: { root_device: { name: disk!.path } } } });
}

const AGENT_ARGS = [
  '--standalone', '--power', 'none', '--cmdline-file', '/dev/null',
  '--image-download-connection-retries', '2',
  '--image-download-connection-retry-interval', '1',
  '--image-download-connection-timeout', '3',
  '--debug',
];

/**
 * The small MBR image and 8 MiB of random data after it: most of the zstd stream is then raw blocks,
 * where a corrupt byte is caught by the frame checksum alone.
 */
function withRandomTail(): Buffer {
  return Buffer.concat([small.raw, randomBytes(8 * MiB)]);
}

function flipByte(b: Buffer, at: number): Buffer {
  const c = Buffer.from(b);
  c[at] = c[at]! ^ 0xff;
  return c;
}

/** Nanoseconds a thread spent runnable but waiting for a CPU (/proc/.../schedstat, field 2), in ms. */
function runqueueWaitMs(path: string): number {
  // Synchronous on purpose: /proc/thread-self must be read by this thread, not a pool thread.
  const fields = readFileSync(path, 'utf8').trim().split(/\s+/);
  return Number(fields[1]) / 1e6;
}

async function compressWith(cmd: string, args: string[], data: Buffer): Promise<Buffer> {
  const src = join(dir, `${cmd}-${randomUUID()}.in`);
  const out = `${src}.out`;
  await writeFile(src, data);
  await must('sh', ['-c', `${cmd} ${args.join(' ')} < '${src}' > '${out}'`]);
  return readFile(out);
}
