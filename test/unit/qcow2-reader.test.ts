// The streaming qcow2 reader against qemu: images made by qemu-img/qemu-io (and a few built by hand
// for layouts qemu does not produce on its own) are fed through readQcow2 in random chunk sizes,
// the ops applied to a buffer or a sparse file, and the result compared byte for byte with
// `qemu-img convert -O raw`.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync, closeSync, ftruncateSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseQcow2Header, Qcow2Error, readQcow2, type Qcow2ReadStats } from '../../src/agent/image/qcow2-reader.js';
import { FileSpillArea, SpillAreaFullError } from '../../src/agent/image/spill-area.js';
import type { SpillArea, WriteOp } from '../../src/agent/image/write-ops.js';
import { captureLog } from './support/log-capture.js';

const KiB = 1024;
const MiB = 1024 * KiB;

// -- helpers ---------------------------------------------------------------------------------

let dir = '';
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ferrum-qcow2-'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const p = (name: string): string => join(dir, name);

function sh(cmd: string, ...args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr ?? e.message}`);
  }
}

/** xorshift32: a seeded PRNG. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

function randomBytes(rng: () => number, n: number): Buffer {
  const words = new Uint32Array(Math.ceil(n / 4));
  for (let i = 0; i < words.length; i++) words[i] = rng();
  return Buffer.from(words.buffer, 0, n);
}

/** Compressible but not trivial content: text-like lines with random numbers. */
function textBytes(rng: () => number, n: number): Buffer {
  const parts: string[] = [];
  let len = 0;
  while (len < n) {
    const line = `line ${rng() % 100000} of the image: ${'abcdefgh'.repeat(1 + (rng() % 6))}\n`;
    parts.push(line);
    len += line.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

/**
 * A sparse raw file of `size` bytes: random, compressible and explicitly zero runs at random
 * offsets (some unaligned), holes in between.
 */
function makeRaw(name: string, size: number, seed: number, opts: { runs?: number; maxRun?: number } = {}): string {
  const rng = prng(seed);
  const file = p(name);
  const fd = openSync(file, 'w');
  ftruncateSync(fd, size);
  const runs = opts.runs ?? 24;
  const maxRun = opts.maxRun ?? Math.max(4096, Math.floor(size / 8));
  for (let i = 0; i < runs; i++) {
    const len = 1 + (rng() % maxRun);
    const at = rng() % Math.max(1, size - len);
    const kind = rng() % 4;
    const data = kind === 0 ? Buffer.alloc(len) : kind === 1 ? textBytes(rng, len) : randomBytes(rng, len);
    writeSync(fd, data, 0, len, at);
  }
  // Always something in the first and the last bytes.
  writeSync(fd, randomBytes(rng, 777), 0, 777, 0);
  writeSync(fd, randomBytes(rng, 300), 0, 300, size - 300);
  closeSync(fd);
  return file;
}

function convert(raw: string, name: string, ...opts: string[]): string {
  const out = p(name);
  sh('qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', ...opts, raw, out);
  return out;
}

function toRaw(qcow2: string): Buffer {
  const out = `${qcow2}.expected.raw`;
  sh('qemu-img', 'convert', '-O', 'raw', qcow2, out);
  const buf = readFileSync(out);
  rmSync(out);
  return buf;
}

/**
 * True while the scenarios run with transient input: chunked() then hands out views of one
 * buffer that it scribbles over as soon as the next chunk is asked for (as plain-http.ts reuses
 * its ring), and applyTo() tells the reader so.
 */
let transientRun = false;

/** The file in chunks of random sizes (1 byte … maxChunk, log-uniform). */
async function* chunked(buf: Buffer, seed: number, maxChunk = MiB, minChunk = 1): AsyncGenerator<Buffer> {
  const rng = prng(seed);
  const maxBits = Math.log2(maxChunk);
  const minBits = Math.log2(minChunk);
  const scratch = transientRun ? Buffer.alloc(maxChunk) : null;
  for (let off = 0; off < buf.length; ) {
    const bits = minBits + (rng() % 1000) / 1000 * (maxBits - minBits);
    const n = Math.max(1, Math.min(buf.length - off, Math.round(2 ** bits)));
    if (scratch) {
      buf.copy(scratch, 0, off, off + n);
      yield scratch.subarray(0, n);
      scratch.fill(0xa5, 0, n);
    } else {
      yield Buffer.from(buf.subarray(off, off + n)); // a buffer of its own, like a network read
    }
    off += n;
  }
}

/** A SpillArea in RAM, for tests only (production spills to the target disk). */
class MemorySpill implements SpillArea {
  private buf = Buffer.alloc(0);
  used = 0;
  writes = 0;
  constructor(private readonly capacity = Infinity) {}
  async write(data: Buffer): Promise<number> {
    if (this.used + data.length > this.capacity) throw new SpillAreaFullError(this.used + data.length, this.capacity);
    if (this.used + data.length > this.buf.length) {
      const bigger = Buffer.alloc(Math.max(2 * this.buf.length, this.used + data.length, 64 * KiB));
      this.buf.copy(bigger, 0, 0, this.used);
      this.buf = bigger;
    }
    const at = this.used;
    data.copy(this.buf, at);
    this.used += data.length;
    this.writes++;
    return at;
  }
  async read(position: number, length: number): Promise<Buffer> {
    if (position + length > this.used) throw new RangeError('read past spill');
    return Buffer.from(this.buf.subarray(position, position + length));
  }
}

interface Applied {
  out: Buffer;
  ops: WriteOp[];
  stats: Qcow2ReadStats;
  spill: MemorySpill;
  dataBytes: number;
  zeroRanges: Array<[number, number]>;
}

/** Runs readQcow2 over `source` and applies the ops to a zeroed buffer, checking their shape. */
async function applyTo(
  source: AsyncIterable<Buffer>,
  opts: { maxBufferedBytes?: number; maxOpBytes?: number; spill?: MemorySpill; keepOps?: boolean } = {},
): Promise<Applied> {
  const spill = opts.spill ?? new MemorySpill();
  const stats = {} as Qcow2ReadStats;
  let out: Buffer | null = null;
  const ops: WriteOp[] = [];
  let dataBytes = 0;
  const zeroRanges: Array<[number, number]> = [];
  for await (const op of readQcow2(source, { spill, stats, maxBufferedBytes: opts.maxBufferedBytes, maxOpBytes: opts.maxOpBytes, transientInput: transientRun })) {
    if (transientRun && op.kind === 'data') expect(op.transient, 'a DataOp of transient input says so').toBe(true);
    if (opts.keepOps) ops.push(op.kind === 'data' ? { ...op, data: Buffer.from(op.data) } : op);
    if (op.kind === 'size') {
      expect(out, 'one size op, first').toBeNull();
      out = Buffer.alloc(op.virtualSize);
      continue;
    }
    expect(out, 'size op comes first').not.toBeNull();
    const len = op.kind === 'data' ? op.data.length : op.length;
    expect(op.offset).toBeGreaterThanOrEqual(0);
    expect(len).toBeGreaterThan(0);
    expect(op.offset + len).toBeLessThanOrEqual(out!.length);
    if (op.kind === 'data') {
      expect(op.data.length).toBeLessThanOrEqual(opts.maxOpBytes ?? 4 * MiB);
      op.data.copy(out!, op.offset);
      dataBytes += op.data.length;
    } else {
      out!.fill(0, op.offset, op.offset + op.length);
      zeroRanges.push([op.offset, op.offset + op.length]);
    }
  }
  expect(out).not.toBeNull();
  return { out: out!, ops, stats, spill, dataBytes, zeroRanges };
}

interface MapEntry {
  start: number;
  length: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

function qemuMap(file: string): MapEntry[] {
  return JSON.parse(sh('qemu-img', 'map', '--output=json', file)) as MapEntry[];
}

/** Bytes qemu says are stored as data (what readQcow2 must yield as DataOps, once each). */
function mappedDataBytes(file: string): number {
  return qemuMap(file)
    .filter((e) => e.data)
    .reduce((n, e) => n + e.length, 0);
}

async function expectSameAsQemu(file: string, seed: number, opts: Parameters<typeof applyTo>[1] & { maxChunk?: number; minChunk?: number } = {}): Promise<Applied> {
  const img = readFileSync(file);
  const r = await applyTo(chunked(img, seed, opts.maxChunk, opts.minChunk), opts);
  const expected = toRaw(file);
  expect(r.out.length).toBe(expected.length);
  if (!r.out.equals(expected)) {
    let i = 0;
    while (r.out[i] === expected[i]) i++;
    expect.fail(`${file}: first difference at byte ${i} (${hex(i)})`);
  }
  return r;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

async function readError(source: AsyncIterable<Buffer>, opts: { maxBufferedBytes?: number; spill?: SpillArea } = {}): Promise<Error> {
  try {
    for await (const _ of readQcow2(source, { spill: opts.spill ?? new MemorySpill(), maxBufferedBytes: opts.maxBufferedBytes })) {
      // drain
    }
  } catch (err) {
    return err as Error;
  }
  throw new Error('readQcow2 did not fail');
}

async function* once(buf: Buffer): AsyncGenerator<Buffer> {
  yield buf;
}

function qemuIo(file: string, ...cmds: string[]): void {
  sh('qemu-io', '-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), file);
}

// -- hand-built images -----------------------------------------------------------------------

interface CraftSpec {
  clusterBits: number;
  virtualSize: number;
  version?: 2 | 3;
  /** Cluster indices of the metadata. */
  l1At: number;
  rtAt: number;
  rbAt: number;
  /** L1 index → cluster index of its L2 table. */
  l2At: Record<number, number>;
  /** Standard clusters: guest cluster index → host cluster index (several guests may share one). */
  data?: Array<{ guest: number; host: number; copied?: boolean }>;
  /** Compressed clusters, packed byte by byte from `at` (a byte offset), in this order. */
  compressed?: { at: number; guests: number[] };
  zero?: number[];
  /** Unreferenced clusters filled with random bytes (free space). */
  garbage?: number[];
  /** Content of guest cluster `g` (default: a seeded pattern). */
  content?: (g: number) => Buffer;
}

/** Builds a valid qcow2 (qemu-img check clean) with exactly the layout asked for. */
function craft(spec: CraftSpec): { file: Buffer; expected: Buffer } {
  const cs = 2 ** spec.clusterBits;
  const version = spec.version ?? 3;
  const l2Entries = cs / 8;
  const l1Size = Math.ceil(spec.virtualSize / (cs * l2Entries));
  const content = spec.content ?? ((g: number) => randomBytes(prng(1000 + g), cs));
  const expected = Buffer.alloc(spec.virtualSize);
  const refs = new Map<number, number>();
  const ref = (c: number) => refs.set(c, (refs.get(c) ?? 0) + 1);
  const writes: Array<[number, Buffer]> = [];
  ref(0);
  for (let c = 0; c < Math.ceil((l1Size * 8) / cs); c++) ref(spec.l1At + c);
  ref(spec.rtAt);
  ref(spec.rbAt);
  const l1 = Buffer.alloc(l1Size * 8);
  const l2s = new Map<number, Buffer>();
  for (const [i, c] of Object.entries(spec.l2At)) {
    ref(c);
    l1.writeBigUInt64BE((1n << 63n) | BigInt(c * cs), Number(i) * 8);
    l2s.set(Number(i), Buffer.alloc(cs));
  }
  const setL2 = (g: number, v: bigint) => {
    const l2 = l2s.get(Math.floor(g / l2Entries));
    if (!l2) throw new Error(`no L2 table for guest cluster ${g}`);
    l2.writeBigUInt64BE(v, (g % l2Entries) * 8);
  };
  const hostUse = new Map<number, number>();
  for (const d of spec.data ?? []) hostUse.set(d.host, (hostUse.get(d.host) ?? 0) + 1);
  for (const d of spec.data ?? []) {
    ref(d.host);
    const copied = d.copied ?? hostUse.get(d.host) === 1;
    setL2(d.guest, (copied ? 1n << 63n : 0n) | BigInt(d.host * cs));
  }
  // Data content: the first guest mapping a host cluster decides its bytes.
  const hostContent = new Map<number, Buffer>();
  for (const d of spec.data ?? []) {
    if (!hostContent.has(d.host)) hostContent.set(d.host, content(d.guest));
    const c = hostContent.get(d.host)!;
    writes.push([d.host * cs, c]);
    c.copy(expected, d.guest * cs, 0, Math.min(cs, spec.virtualSize - d.guest * cs));
  }
  if (spec.compressed) {
    let at = spec.compressed.at;
    const x = 62 - (spec.clusterBits - 8);
    for (const g of spec.compressed.guests) {
      const c = content(g);
      const z = deflateRawSync(c);
      writes.push([at, z]);
      const extra = Math.floor((at + z.length - 1) / 512) - Math.floor(at / 512);
      if (extra >= 2 ** (spec.clusterBits - 8)) throw new Error(`guest cluster ${g} does not compress enough for a compressed cluster`);
      setL2(g, (1n << 62n) | (BigInt(extra) << BigInt(x)) | BigInt(at));
      for (let hc = Math.floor(at / cs); hc <= Math.floor((at + z.length - 1) / cs); hc++) ref(hc);
      c.copy(expected, g * cs);
      at += z.length;
    }
  }
  for (const g of spec.zero ?? []) setL2(g, 1n);
  for (const c of spec.garbage ?? []) writes.push([c * cs, randomBytes(prng(c), cs)]);
  const nClusters = Math.max(...refs.keys(), ...(spec.garbage ?? [])) + 1;
  const rb = Buffer.alloc(cs);
  for (const [c, n] of refs) rb.writeUInt16BE(n, c * 2);
  const rt = Buffer.alloc(cs);
  rt.writeBigUInt64BE(BigInt(spec.rbAt * cs), 0);
  const hdr = Buffer.alloc(cs);
  hdr.writeUInt32BE(0x514649fb, 0);
  hdr.writeUInt32BE(version, 4);
  hdr.writeUInt32BE(spec.clusterBits, 20);
  hdr.writeBigUInt64BE(BigInt(spec.virtualSize), 24);
  hdr.writeUInt32BE(l1Size, 36);
  hdr.writeBigUInt64BE(BigInt(spec.l1At * cs), 40);
  hdr.writeBigUInt64BE(BigInt(spec.rtAt * cs), 48);
  hdr.writeUInt32BE(1, 56);
  if (version === 3) {
    hdr.writeUInt32BE(4, 96);
    hdr.writeUInt32BE(104, 100);
  }
  const file = Buffer.alloc(nClusters * cs);
  hdr.copy(file, 0);
  l1.copy(file, spec.l1At * cs);
  rt.copy(file, spec.rtAt * cs);
  rb.copy(file, spec.rbAt * cs);
  for (const [i, l2] of l2s) l2.copy(file, spec.l2At[i]! * cs);
  for (const [at, b] of writes) b.copy(file, at);
  const end = Math.max(...writes.map(([at, b]) => at + b.length), nClusters * cs);
  return { file: end > file.length ? Buffer.concat([file, Buffer.alloc(end - file.length)]) : file, expected };
}

function checkWithQemu(name: string, file: Buffer, expected: Buffer): string {
  const path = p(name);
  writeFileSync(path, file);
  sh('qemu-img', 'check', path); // throws if qemu finds errors
  expect(toRaw(path).equals(expected), `${name}: qemu agrees with the crafted content`).toBe(true);
  return path;
}

// -- tests -----------------------------------------------------------------------------------

describe('parseQcow2Header', () => {
  it('reads the fields of version 2 and version 3 headers', () => {
    const raw = makeRaw('hdr.raw', 3 * MiB, 1);
    const v3 = parseQcow2Header(readFileSync(convert(raw, 'hdr3.qcow2', '-o', 'compat=1.1,cluster_size=4096')));
    expect(v3).toMatchObject({
      version: 3,
      clusterBits: 12,
      clusterSize: 4096,
      virtualSize: 3 * MiB,
      cryptMethod: 0,
      compressionType: 'zlib',
      dirty: false,
      extendedL2: false,
      refcountOrder: 4,
      nbSnapshots: 0,
      l2Entries: 512,
    });
    expect(v3.l1Size).toBeGreaterThanOrEqual(2);
    expect(v3.l1TableOffset % 4096).toBe(0);
    const v2 = parseQcow2Header(readFileSync(convert(raw, 'hdr2.qcow2', '-o', 'compat=0.10')));
    expect(v2).toMatchObject({ version: 2, clusterSize: 65536, headerLength: 72, refcountOrder: 4, incompatibleFeatures: 0n });
  });

  const base = (): Buffer => {
    const raw = p('hdr.raw');
    return readFileSync(convert(raw, `base-${Math.random()}.qcow2`, '-o', 'compat=1.1'));
  };

  it.each([
    ['bad magic', (b: Buffer) => b.writeUInt32BE(0x12345678, 0), /not a qcow2 image/],
    ['version 1', (b: Buffer) => b.writeUInt32BE(1, 4), /unsupported qcow2 version 1/],
    ['version 4', (b: Buffer) => b.writeUInt32BE(4, 4), /unsupported qcow2 version 4/],
    ['256-byte clusters', (b: Buffer) => b.writeUInt32BE(8, 20), /cluster size 2\^8/],
    ['4 MiB clusters', (b: Buffer) => b.writeUInt32BE(22, 20), /cluster size 2\^22/],
    ['AES encryption', (b: Buffer) => b.writeUInt32BE(1, 32), /encrypted.*AES/],
    ['a backing file', (b: Buffer) => {
      b.write('base.img', 0x1000);
      b.writeBigUInt64BE(0x1000n, 8);
      b.writeUInt32BE(8, 16);
    }, /backing file.*\("base\.img"\)/],
    ['an unknown incompatible feature', (b: Buffer) => b.writeBigUInt64BE(1n << 7n, 72), /unsupported incompatible features: bit 7/],
    ['the corrupt bit', (b: Buffer) => b.writeBigUInt64BE(2n, 72), /marked corrupt/],
    ['an external data file', (b: Buffer) => b.writeBigUInt64BE(4n, 72), /external data file/],
    ['an unknown compression type', (b: Buffer) => {
      b.writeBigUInt64BE(8n, 72);
      b.writeUInt32BE(112, 100);
      b[104] = 7;
    }, /compression type 7/],
    ['a virtual size beyond 2^53', (b: Buffer) => b.writeBigUInt64BE(1n << 63n, 24), /virtual size \d+ is too large/],
    ['a virtual size its L1 table cannot map', (b: Buffer) => b.writeBigUInt64BE(1n << 50n, 24), /L1 table .* too small/],
    ['an unaligned L1 table', (b: Buffer) => b.writeBigUInt64BE(0x30200n, 40), /L1 table offset/],
    ['extended L2 entries with 4 KiB clusters', (b: Buffer) => {
      b.writeUInt32BE(12, 20);
      b.writeBigUInt64BE(16n, 72);
    }, /extended L2 entries need clusters of at least 16 KiB/],
  ])('refuses %s', (_name, mutate, message) => {
    const b = base();
    mutate(b);
    expect(() => parseQcow2Header(b)).toThrow(Qcow2Error);
    expect(() => parseQcow2Header(b)).toThrow(message);
  });

  it('names unknown incompatible features from the feature name table', () => {
    const b = base();
    b.writeBigUInt64BE(1n << 9n, 72);
    // qemu writes a feature name table; add an entry for bit 9 at its end.
    const h = parseQcow2Header(Buffer.concat([b.subarray(0, 72), Buffer.alloc(8), b.subarray(80)]));
    const table = h.extensions.find((e) => e.type === 0x6803f857)!;
    expect(table).toBeDefined();
    const entry = table.offset + table.length - 48;
    b[entry] = 0;
    b[entry + 1] = 9;
    b.fill(0, entry + 2, entry + 48);
    b.write('frobnication', entry + 2);
    expect(() => parseQcow2Header(b)).toThrow(/bit 9 \(frobnication\)/);
  });
});

// The scenarios below run twice: with chunks the reader may keep, and with transient chunks whose
// memory is scribbled over once the next is asked for (the image download's ring).
for (const transient of [false, true]) {
describe(transient ? 'transient input (chunk memory reused after each chunk)' : 'owned input', () => {
beforeAll(() => {
  transientRun = transient;
});
afterAll(() => {
  transientRun = false;
});

describe('readQcow2 against qemu-img convert', { timeout: 60_000 }, () => {
  const cases: Array<[string, number, string[]]> = [
    ['v3, 64 KiB clusters', 24 * MiB, ['-o', 'compat=1.1']],
    ['v2, 64 KiB clusters', 24 * MiB, ['-o', 'compat=0.10']],
    ['v3, 512 B clusters', 4 * MiB, ['-o', 'compat=1.1,cluster_size=512']],
    ['v2, 512 B clusters', 3 * MiB + 1536, ['-o', 'compat=0.10,cluster_size=512']],
    ['v3, 4 KiB clusters', 16 * MiB, ['-o', 'compat=1.1,cluster_size=4096']],
    ['v3, 2 MiB clusters', 40 * MiB, ['-o', 'compat=1.1,cluster_size=2M']],
    ['v2, 2 MiB clusters', 24 * MiB + 512, ['-o', 'compat=0.10,cluster_size=2M']],
    ['v3, odd virtual size', 5 * MiB + 3 * 512, ['-o', 'compat=1.1,cluster_size=65536']],
    ['v3, compressed, 64 KiB clusters', 24 * MiB, ['-c', '-o', 'compat=1.1']],
    ['v2, compressed, 64 KiB clusters', 16 * MiB, ['-c', '-o', 'compat=0.10']],
    ['v3, compressed, 512 B clusters', 3 * MiB, ['-c', '-o', 'compat=1.1,cluster_size=512']],
    ['v3, compressed, 4 KiB clusters', 12 * MiB, ['-c', '-o', 'compat=1.1,cluster_size=4096']],
    ['v3, compressed, 2 MiB clusters', 16 * MiB, ['-c', '-o', 'compat=1.1,cluster_size=2M']],
    ['v3, preallocation=metadata', 20 * MiB, ['-o', 'compat=1.1,preallocation=metadata']],
    ['v2, preallocation=metadata', 12 * MiB, ['-o', 'compat=0.10,preallocation=metadata,cluster_size=4096']],
    ['v3, extended L2, 64 KiB clusters', 16 * MiB, ['-o', 'compat=1.1,extended_l2=on']],
    ['v3, lazy refcounts, refcount_bits=64', 8 * MiB, ['-o', 'compat=1.1,lazy_refcounts=on,refcount_bits=64']],
  ];

  it.each(cases)('%s', async (name, size, opts) => {
    const seed = name.length * 7919 + size;
    const raw = makeRaw(`${name}.raw`, size, seed);
    const file = convert(raw, `${name}.qcow2`, ...opts);
    const r = await expectSameAsQemu(file, seed);
    // Every stored byte yielded exactly once, nothing spilled: qemu-img writes tables before data.
    expect(r.dataBytes).toBe(mappedDataBytes(file));
    expect(r.spill.used).toBe(0);
    if (opts.includes('-c')) expect(r.stats.compressedClusters).toBeGreaterThan(0);
    // A second, different chunking, with no RAM for out-of-order data: qemu-img writes each L2
    // table before its data, so nothing goes to limbo; only compressed bytes wait there until the
    // deflate stream that owns them is found (packed streams cross L2 boundaries).
    const strict = await expectSameAsQemu(file, seed + 1, { maxChunk: 64 * KiB, maxBufferedBytes: 0 });
    if (opts.includes('-c')) expect(strict.spill.used).toBeLessThan(statSync(file).size / 16);
    else expect(strict.stats.limboBytes).toBe(0);
  });

  it('handles 1-byte chunks', async () => {
    const raw = makeRaw('tiny.raw', 256 * KiB, 5, { runs: 6, maxRun: 16 * KiB });
    const plain = convert(raw, 'tiny.qcow2', '-o', 'compat=1.1,cluster_size=4096');
    const compressed = convert(raw, 'tinyc.qcow2', '-c', '-o', 'compat=1.1,cluster_size=4096');
    await expectSameAsQemu(plain, 1, { maxChunk: 1 });
    await expectSameAsQemu(compressed, 1, { maxChunk: 1 });
  });

  it('coalesces adjacent clusters into large writes', async () => {
    const size = 16 * MiB;
    writeFileSync(p('dense.raw'), randomBytes(prng(77), size));
    const file = convert(p('dense.raw'), 'dense.qcow2', '-o', 'compat=1.1,cluster_size=4096');
    const r = await applyTo(chunked(readFileSync(file), 3, 64 * KiB, 16 * KiB), { keepOps: true });
    const data = r.ops.filter((o) => o.kind === 'data');
    expect(r.out.equals(toRaw(file))).toBe(true);
    if (transient) {
      // A chunk's memory is not the reader's to keep: no write spans two chunks (the device
      // writer gathers them into its own 4 MiB buffers instead), but the clusters of one chunk
      // still come out together.
      expect(data.length).toBeGreaterThan(16);
      expect(data.every((o) => o.kind === 'data' && o.data.length <= 64 * KiB)).toBe(true);
      expect(data.length).toBeLessThan((16 * MiB) / (16 * KiB) + 8);
    } else {
      // 4 KiB clusters in 16–64 KiB chunks still come out as ~4 MiB writes.
      expect(data.length).toBeLessThan(16);
    }
    const small = await applyTo(chunked(readFileSync(file), 3, 64 * KiB, 16 * KiB), { keepOps: true, maxOpBytes: 256 * KiB });
    expect(small.ops.filter((o) => o.kind === 'data').every((o) => o.kind === 'data' && o.data.length <= 256 * KiB)).toBe(true);
  });
});

describe('zero clusters and subclusters', { timeout: 60_000 }, () => {
  it('turns v3 zero clusters into ZeroOps and leaves unallocated clusters alone', async () => {
    const file = p('zeros.qcow2');
    sh('qemu-img', 'create', '-f', 'qcow2', '-o', 'compat=1.1', file, '8M');
    qemuIo(file, 'write -P 0x55 0 1M', 'write -z 2M 1M', 'write -P 0x66 4M 512k', 'write -z 4M 128k', 'write -z -u 6M 64k', 'write -P 0x77 7M 4k');
    const r = await expectSameAsQemu(file, 11);
    const zeros = qemuMap(file).filter((e) => e.present && e.zero && !e.data);
    const merged = r.zeroRanges.sort((a, b) => a[0] - b[0]);
    const covered = (s: number, e: number) => merged.some(([a, b]) => a <= s && b >= e);
    for (const z of zeros) expect(covered(z.start, z.start + z.length), `zero range ${z.start}+${z.length}`).toBe(true);
    expect(r.stats.zeroBytes).toBe(zeros.reduce((n, z) => n + z.length, 0));
    expect(r.dataBytes).toBe(mappedDataBytes(file));
  });

  it('reads extended L2 entries (subclusters allocated, zero and unallocated)', async () => {
    const file = p('extl2.qcow2');
    sh('qemu-img', 'create', '-f', 'qcow2', '-o', 'compat=1.1,extended_l2=on,cluster_size=64k', file, '4M');
    qemuIo(
      file,
      'write -P 0x11 0 2k',
      'write -P 0x22 6k 2k',
      'write -P 0x33 64k 64k',
      'write -z 70k 4k',
      'write -P 0x44 200k 10k',
      'write -z 1M 192k',
      'write -P 0x55 1100k 2k',
      'write -P 0x66 4190208 4096',
    );
    const h = parseQcow2Header(readFileSync(file));
    expect(h.extendedL2).toBe(true);
    expect(h.l2Entries).toBe(4096);
    const r = await expectSameAsQemu(file, 12);
    expect(r.dataBytes).toBe(mappedDataBytes(file));
    expect(r.stats.zeroBytes).toBeGreaterThan(0);
    await expectSameAsQemu(file, 13, { maxChunk: 4 * KiB });
  });

  it('reads compressed clusters in images with extended L2 entries', async () => {
    const raw = makeRaw('extl2c.raw', 6 * MiB, 31);
    const file = convert(raw, 'extl2c.qcow2', '-c', '-o', 'compat=1.1,extended_l2=on');
    const r = await expectSameAsQemu(file, 14);
    expect(r.stats.compressedClusters).toBeGreaterThan(0);
  });
});

describe('data that precedes the tables mapping it', { timeout: 60_000 }, () => {
  // qemu-img snapshot -c, then a write: the active L2 table is copied (COW) to the end of the
  // file, after all the data it maps; deleting the snapshot leaves it there.
  function snapshotImage(name: string, keepSnapshot: boolean): string {
    const file = p(name);
    sh('qemu-img', 'create', '-f', 'qcow2', '-o', 'compat=1.1,cluster_size=4096', file, '8M');
    qemuIo(file, 'write -P 0x21 0 3M', 'write -P 0x22 5M 1M');
    sh('qemu-img', 'snapshot', '-c', 'snap1', file);
    qemuIo(file, 'write -P 0x23 1M 8k', 'write -P 0x24 5M 4k', 'write -P 0x25 7M 64k');
    if (!keepSnapshot) sh('qemu-img', 'snapshot', '-d', 'snap1', file);
    return file;
  }

  it('keeps such data in RAM when it fits in maxBufferedBytes', async () => {
    const file = snapshotImage('cow.qcow2', false);
    const r = await expectSameAsQemu(file, 21);
    // L2 tables #0 and #2 (4 KiB clusters: 2 MiB each) were copied after their 3 MiB of data.
    expect(r.stats.limboBytes).toBeGreaterThan(3 * MiB - 8 * KiB);
    expect(r.spill.used).toBe(0);
    expect(r.stats.peakBufferedBytes).toBeGreaterThan(0);
    expect(r.dataBytes).toBe(mappedDataBytes(file));
  });

  it('spills it when it does not, and reads it back from the spill area', async () => {
    const file = snapshotImage('cow2.qcow2', false);
    const r = await expectSameAsQemu(file, 22, { maxBufferedBytes: 256 * KiB });
    expect(r.spill.used).toBeGreaterThan(3 * MiB - 8 * KiB - 256 * KiB - 64 * KiB);
    expect(r.stats.peakBufferedBytes).toBeLessThanOrEqual(256 * KiB + 64 * KiB);
    const none = await expectSameAsQemu(file, 23, { maxBufferedBytes: 0 });
    expect(none.stats.peakBufferedBytes).toBeLessThanOrEqual(64 * KiB);
    // The operator can tell from the log why the target saw extra writes.
    const { log, messages } = captureLog();
    const img = readFileSync(file);
    for await (const _ of readQcow2(once(img), { spill: new MemorySpill(), maxBufferedBytes: 0, log })) {
      // drain
    }
    expect(messages().filter((m) => m.includes('spilling'))).toHaveLength(1);
  });

  it('writes clusters shared with an internal snapshot, ignoring the snapshot itself', async () => {
    const file = snapshotImage('snap.qcow2', true);
    expect(parseQcow2Header(readFileSync(file)).nbSnapshots).toBe(1);
    await expectSameAsQemu(file, 24);
    await expectSameAsQemu(file, 25, { maxBufferedBytes: 0, maxChunk: 8 * KiB });
  });

  it('reads an image whose L1 table was moved to the end (qemu-img resize)', async () => {
    const file = p('resized.qcow2');
    sh('qemu-img', 'create', '-f', 'qcow2', '-o', 'compat=1.1,cluster_size=4096', file, '4M');
    qemuIo(file, 'write -P 0x31 0 1M', 'write -P 0x32 3M 512k');
    sh('qemu-img', 'resize', file, '64M');
    qemuIo(file, 'write -P 0x33 40M 256k');
    const h = parseQcow2Header(readFileSync(file));
    expect(h.l1TableOffset).toBeGreaterThan(1.5 * MiB); // after the data
    const r = await expectSameAsQemu(file, 26, { maxBufferedBytes: 512 * KiB });
    expect(r.spill.used).toBeGreaterThan(MiB);
    expect(r.dataBytes).toBe(mappedDataBytes(file));
  });

  it('reads a hand-built image with every L2 table after its data', async () => {
    const { file, expected } = craft({
      clusterBits: 12,
      virtualSize: 4 * MiB,
      l1At: 3,
      rtAt: 1,
      rbAt: 2,
      l2At: { 0: 20, 1: 4 },
      data: [
        { guest: 0, host: 5 },
        { guest: 1, host: 6 },
        { guest: 2, host: 7 },
        { guest: 9, host: 8 },
        { guest: 700, host: 9 }, // L2 #1 is at cluster 4, before this
        { guest: 3, host: 21 }, // after its L2 table
      ],
    });
    const path = checkWithQemu('crafted-order.qcow2', file, expected);
    for (const maxBufferedBytes of [undefined, 0]) {
      const r = await applyTo(chunked(readFileSync(path), 31, 16 * KiB), { maxBufferedBytes });
      expect(r.out.equals(expected)).toBe(true);
      expect(r.spill.used > 0).toBe(maxBufferedBytes === 0);
    }
  });

  it('writes a cluster mapped twice at both guest offsets, even when the second mapping comes later', async () => {
    const { file, expected } = craft({
      clusterBits: 12,
      virtualSize: 4 * MiB,
      l1At: 3,
      rtAt: 1,
      rbAt: 2,
      l2At: { 0: 4, 1: 9 },
      data: [
        { guest: 0, host: 5 },
        { guest: 7, host: 5 }, // same L2, both known when the cluster arrives
        { guest: 600, host: 5 }, // L2 #1 comes after the cluster
        { guest: 1, host: 6 },
        { guest: 601, host: 6 },
        { guest: 2, host: 7 },
        { guest: 602, host: 10 },
      ],
    });
    const path = checkWithQemu('crafted-shared.qcow2', file, expected);
    for (const maxBufferedBytes of [undefined, 0]) {
      const r = await applyTo(chunked(readFileSync(path), 32, 8 * KiB), { maxBufferedBytes });
      expect(r.out.equals(expected)).toBe(true);
      expect(r.stats.dataBytes).toBe(7 * 4096);
    }
  });

  it('reads compressed clusters before their L2 table, including one sharing a sector with a mapped one', async () => {
    // L2 #0 (cluster 4) maps guests 0-2 compressed at byte 5*4096…; guests 512-514 (L2 #1, at
    // cluster 12) are packed right after them, in the same sectors.
    const content = (g: number) => (g % 2 ? textBytes(prng(g), 4096) : Buffer.alloc(4096, g & 0xff));
    const { file, expected } = craft({
      clusterBits: 12,
      virtualSize: 4 * MiB,
      l1At: 3,
      rtAt: 1,
      rbAt: 2,
      l2At: { 0: 4, 1: 12 },
      compressed: { at: 5 * 4096, guests: [0, 1, 2, 512, 513, 514, 3] },
      data: [{ guest: 520, host: 13 }],
      content,
    });
    const path = checkWithQemu('crafted-compressed.qcow2', file, expected);
    for (const maxChunk of [1, 100, 4096, MiB]) {
      for (const maxBufferedBytes of [undefined, 0]) {
        const r = await applyTo(chunked(readFileSync(path), 33 + maxChunk, maxChunk), { maxBufferedBytes });
        expect(r.out.equals(expected)).toBe(true);
        expect(r.stats.compressedClusters).toBe(7);
      }
    }
  });

  it('refuses, rather than writes wrong data, when a cluster flagged as unshared is mapped again later', async () => {
    const { file } = craft({
      clusterBits: 12,
      virtualSize: 4 * MiB,
      l1At: 3,
      rtAt: 1,
      rbAt: 2,
      l2At: { 0: 4, 1: 9 },
      data: [
        { guest: 0, host: 5, copied: true },
        { guest: 600, host: 5, copied: true },
      ],
    });
    const err = await readError(once(file));
    expect(err).toBeInstanceOf(Qcow2Error);
    expect(err.message).toMatch(/cannot be streamed.*data cluster for guest offset 0x258000 at host offset 0x5000/);
  });

  it('fails clearly when the spill area is full', async () => {
    const file = snapshotImage('cow3.qcow2', false);
    const err = await readError(once(readFileSync(file)), { maxBufferedBytes: 0, spill: new MemorySpill(MiB) });
    expect(err).toBeInstanceOf(Qcow2Error);
    expect(err.message).toMatch(/needs more scratch space than the target disk has/);
    expect(err.cause).toBeInstanceOf(SpillAreaFullError);
  });
});

describe('random layouts', { timeout: 60_000 }, () => {
  // Hand-built images whose clusters (metadata, data, packed compressed clusters, free space) are
  // placed in a random order, read with random chunk sizes and RAM budgets.
  function randomLayout(seed: number, clusterBits: number): { file: Buffer; expected: Buffer } {
    const rng = prng(seed);
    const cs = 2 ** clusterBits;
    const l2Entries = cs / 8;
    const virtualSize = { 9: 256 * KiB, 12: 4 * MiB, 14: 64 * MiB }[clusterBits]!;
    const nGuests = virtualSize / cs;
    const nL2 = virtualSize / (cs * l2Entries);
    const shuffle = <T,>(a: T[]): T[] => {
      for (let i = a.length - 1; i > 0; i--) {
        const j = rng() % (i + 1);
        [a[i], a[j]] = [a[j]!, a[i]!];
      }
      return a;
    };
    // Which guest clusters are data, compressed, zero, or shared.
    const guests = shuffle([...Array(nGuests).keys()]).slice(0, 48);
    const dataGuests = guests.slice(0, 20);
    const compGuests = guests.slice(20, 32).sort((a, b) => a - b);
    const zeroGuests = guests.slice(32, 36);
    const sharedGuests = guests.slice(36, 40);
    const compressible = (g: number) => (g % 2 === 0 ? textBytes(prng(g), cs) : Buffer.alloc(cs, g & 0xff));
    const content = (g: number) => (compGuests.includes(g) ? compressible(g) : randomBytes(prng(g), cs));
    const compBytes = compGuests.reduce((n, g) => n + deflateRawSync(content(g)).length, 0);
    const compClusters = Math.ceil((compBytes + 700) / cs);
    // Items in a random order, each taking the next clusters of the file.
    type Item = { kind: 'rt' | 'rb' | 'l1' | 'garbage' | 'comp' } | { kind: 'l2'; i: number } | { kind: 'data'; g: number };
    const items: Item[] = shuffle([
      { kind: 'rt' },
      { kind: 'rb' },
      { kind: 'l1' },
      { kind: 'comp' },
      { kind: 'garbage' },
      { kind: 'garbage' },
      ...[...Array(nL2).keys()].map((i) => ({ kind: 'l2' as const, i })),
      ...dataGuests.map((g) => ({ kind: 'data' as const, g })),
    ]);
    let next = 1;
    const at: Record<string, number> = {};
    const l2At: Record<number, number> = {};
    const data: Array<{ guest: number; host: number }> = [];
    const garbage: number[] = [];
    let compAt = 0;
    for (const it of items) {
      if (it.kind === 'l2') l2At[it.i] = next++;
      else if (it.kind === 'data') data.push({ guest: it.g, host: next++ });
      else if (it.kind === 'garbage') garbage.push(next++);
      else if (it.kind === 'comp') {
        compAt = next * cs + (rng() % 600);
        next += compClusters;
      } else at[it.kind] = next++;
    }
    // Shared: map more guests onto existing data clusters.
    sharedGuests.forEach((g, k) => data.push({ guest: g, host: data[k % dataGuests.length]!.host }));
    return craft({
      clusterBits,
      virtualSize,
      l1At: at.l1!,
      rtAt: at.rt!,
      rbAt: at.rb!,
      l2At,
      data,
      compressed: { at: compAt, guests: compGuests },
      zero: zeroGuests,
      garbage,
      content,
    });
  }

  it.each([...Array(Number(process.env.QCOW2_FUZZ ?? 40)).keys()])('layout %i', async (n) => {
    const clusterBits = [9, 12, 14][n % 3]!; // 16 KiB clusters are inflated by the worker
    const { file, expected } = randomLayout(9000 + n, clusterBits);
    if (n < 6) checkWithQemu(`random-${n}.qcow2`, file, expected);
    for (const [k, maxBufferedBytes] of [undefined, 0, 3000].entries()) {
      const r = await applyTo(chunked(file, n * 10 + k, k === 1 ? 512 : 64 * KiB), { maxBufferedBytes });
      if (!r.out.equals(expected)) {
        let i = 0;
        while (r.out[i] === expected[i]) i++;
        expect.fail(`layout ${n}, budget ${maxBufferedBytes}: first difference at ${hex(i)}`);
      }
      expect(r.stats.compressedClusters).toBe(12);
    }
  });
});
});
}

describe('refused images', { timeout: 60_000 }, () => {
  it('refuses an image with a backing file', async () => {
    const base = p('base.qcow2');
    sh('qemu-img', 'create', '-f', 'qcow2', base, '4M');
    const overlay = p('overlay.qcow2');
    sh('qemu-img', 'create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', overlay, '4M');
    const err = await readError(chunked(readFileSync(overlay), 1, 4096));
    expect(err).toBeInstanceOf(Qcow2Error);
    expect(err.message).toContain('backing file');
    expect(err.message).toContain(base);
  });

  it('refuses a LUKS-encrypted image', async () => {
    // The header cluster of an image made by qemu-img (see test/fixtures/qcow2/README.md).
    const header = readFileSync(new URL('../fixtures/qcow2/luks-header.bin', import.meta.url));
    expect(() => parseQcow2Header(header)).toThrow(/encrypted qcow2 images are not supported \(LUKS encryption\)/);
    const image = Buffer.concat([header, Buffer.alloc(2 * MiB)]);
    const err = await readError(chunked(image, 3, 4096));
    expect(err).toBeInstanceOf(Qcow2Error);
    expect(err.message).toMatch(/encrypted.*LUKS/);
  });

  it('refuses an AES-encrypted image', async () => {
    const file = p('aes.qcow2');
    sh('qemu-img', 'create', '--object', 'secret,id=sec0,data=hunter2', '-f', 'qcow2', '-o', 'encrypt.format=aes,encrypt.key-secret=sec0', file, '1M');
    const err = await readError(chunked(readFileSync(file), 2, 512));
    expect(err).toBeInstanceOf(Qcow2Error);
    expect(err.message).toMatch(/encrypted.*AES/);
  });

  it('refuses an image with an external data file', async () => {
    const file = p('datafile.qcow2');
    sh('qemu-img', 'create', '-f', 'qcow2', '-o', `data_file=${p('datafile.raw')}`, file, '4M');
    const err = await readError(once(readFileSync(file)));
    expect(err.message).toMatch(/external data file/);
  });

  it('refuses a raw image and an empty stream', async () => {
    expect((await readError(once(Buffer.alloc(4096, 1)))).message).toMatch(/not a qcow2 image/);
    expect((await readError(once(Buffer.from('QF')))).message).toMatch(/truncated/);
    expect((await readError((async function* () {})())).message).toMatch(/empty/);
  });

  it('handles zstd-compressed clusters as the runtime allows', async () => {
    const raw = makeRaw('zstd.raw', 4 * MiB, 41);
    const file = convert(raw, 'zstd.qcow2', '-c', '-o', 'compat=1.1,compression_type=zstd');
    expect(parseQcow2Header(readFileSync(file)).compressionType).toBe('zstd');
    if (typeof (await import('node:zlib') as { zstdDecompressSync?: unknown }).zstdDecompressSync === 'function') {
      const r = await expectSameAsQemu(file, 42);
      expect(r.stats.compressedClusters).toBeGreaterThan(0);
      // Many L2 tables: zstd frames packed across them go through limbo.
      const small = convert(raw, 'zstd4k.qcow2', '-c', '-o', 'compat=1.1,compression_type=zstd,cluster_size=4096');
      await expectSameAsQemu(small, 44, { maxChunk: 4 * KiB });
      await expectSameAsQemu(small, 45, { maxBufferedBytes: 0 });
    } else {
      const err = await readError(once(readFileSync(file)));
      expect(err).toBeInstanceOf(Qcow2Error);
      expect(err.message).toMatch(/zstd-compressed clusters.*compression_type=zlib/);
      // An image with the zstd type but no compressed cluster is still fine.
      const plain = convert(raw, 'zstd-plain.qcow2', '-o', 'compat=1.1,compression_type=zstd');
      await expectSameAsQemu(plain, 43);
    }
  });
});

describe('truncated streams', { timeout: 60_000 }, () => {
  it('detects a stream that ends before all mapped clusters', async () => {
    const raw = makeRaw('trunc.raw', 8 * MiB, 51);
    for (const opts of [['-o', 'compat=1.1'], ['-c', '-o', 'compat=1.1,cluster_size=4096']]) {
      const file = readFileSync(convert(raw, `trunc${opts.length}.qcow2`, ...opts));
      // Cut inside the last stored cluster too: for compressed images, inside the last deflate
      // stream (the file ends with padding to a sector, which may go missing harmlessly).
      const map = qemuMap(p(`trunc${opts.length}.qcow2`)).filter((e) => e.data && e.offset !== undefined);
      const lastCut = opts.includes('-c') ? file.length - 600 : Math.max(...map.map((e) => e.offset! + e.length)) - 1;
      for (const cut of [200, 4096, 65536 + 100, Math.floor(file.length / 2), lastCut]) {
        const err = await readError(chunked(file.subarray(0, cut), cut));
        expect(err, `cut at ${cut} of ${file.length} (${opts.join(' ')})`).toBeInstanceOf(Qcow2Error);
        expect(err.message).toMatch(/truncated/);
      }
    }
  });
});

describe('bounded memory', () => {
  it('reads a 2 GiB sparse image with a small, steady footprint', { timeout: 60_000 }, async () => {
    const raw = p('big.raw');
    const fd = openSync(raw, 'w');
    ftruncateSync(fd, 2048 * MiB);
    const rng = prng(61);
    for (let i = 0; i < 48; i++) writeSync(fd, randomBytes(rng, MiB), 0, MiB, (rng() % 2047) * MiB + (rng() % 512) * 512);
    closeSync(fd);
    const file = convert(raw, 'big.qcow2', '-o', 'compat=1.1');
    const target = p('big.out');
    const fh = await open(target, 'w+');
    const stats = {} as Qcow2ReadStats;
    let peak = 0;
    try {
      const img = readFileSync(file);
      global.gc?.();
      const before = process.memoryUsage();
      for await (const op of readQcow2(chunked(img, 62, 256 * KiB, 16 * KiB), { spill: new MemorySpill(), stats })) {
        if (op.kind === 'size') await fh.truncate(op.virtualSize);
        else if (op.kind === 'data') await fh.write(op.data, 0, op.data.length, op.offset);
        const m = process.memoryUsage();
        peak = Math.max(peak, m.heapUsed + m.arrayBuffers - before.heapUsed - before.arrayBuffers);
      }
    } finally {
      await fh.close();
    }
    sh('qemu-img', 'compare', '-f', 'raw', '-F', 'qcow2', target, file);
    expect(stats.spilledBytes).toBe(0);
    expect(stats.peakBufferedBytes).toBe(0);
    expect(stats.dataBytes).toBe(mappedDataBytes(file));
    // The image itself is in RAM here (48 MiB); what the reader adds stays small.
    expect(peak).toBeLessThan(128 * MiB);
  });

  it('keeps RAM under maxBufferedBytes when a 2 GiB image must be spilled', { timeout: 60_000 }, async () => {
    const file = p('bigl1.qcow2');
    sh('qemu-img', 'create', '-f', 'qcow2', '-o', 'compat=1.1', file, '64M');
    qemuIo(file, 'write -P 0x41 0 24M', 'write -P 0x42 40M 8M');
    sh('qemu-img', 'resize', file, '2G'); // the L1 table moves after all the data
    const spillFile = p('bigl1.spill');
    const sfh = await open(spillFile, 'w+');
    try {
      const spill = new FileSpillArea(sfh, 4096, 64 * MiB);
      const stats = {} as Qcow2ReadStats;
      const target = p('bigl1.out');
      const tfh = await open(target, 'w+');
      try {
        for await (const op of readQcow2(chunked(readFileSync(file), 63, MiB, 64 * KiB), { spill, stats, maxBufferedBytes: 4 * MiB })) {
          if (op.kind === 'data') await tfh.write(op.data, 0, op.data.length, op.offset);
          if (op.kind === 'size') {
            expect(op.virtualSize).toBe(2048 * MiB);
            await tfh.truncate(op.virtualSize);
          }
        }
      } finally {
        await tfh.close();
      }
      sh('qemu-img', 'compare', '-f', 'raw', '-F', 'qcow2', target, file);
      expect(stats.peakBufferedBytes).toBeLessThanOrEqual(4 * MiB + 64 * KiB);
      expect(stats.spilledBytes).toBe(spill.used);
      expect(spill.used).toBeGreaterThanOrEqual(28 * MiB);
      expect(spill.used).toBeLessThanOrEqual(33 * MiB);
    } finally {
      await sfh.close();
    }
  });
});

describe('FileSpillArea', () => {
  let fh: FileHandle;
  beforeAll(async () => {
    fh = await open(p('spill.bin'), 'w+');
    await fh.write(Buffer.alloc(1000, 0xee), 0, 1000, 0);
  });
  afterAll(async () => {
    await fh.close();
  });

  it('stores data sequentially inside its region and reads it back', async () => {
    const spill = new FileSpillArea(fh, 100, 500);
    const a = await spill.write(Buffer.alloc(200, 1));
    const [b, c] = await Promise.all([spill.write(Buffer.alloc(100, 2)), spill.write(Buffer.alloc(50, 3))]);
    expect([a, b, c]).toEqual([0, 200, 300]);
    expect(spill.used).toBe(350);
    expect(await spill.read(190, 20)).toEqual(Buffer.concat([Buffer.alloc(10, 1), Buffer.alloc(10, 2)]));
    expect(await spill.read(300, 50)).toEqual(Buffer.alloc(50, 3));
    const file = readFileSync(p('spill.bin'));
    expect(file.subarray(0, 100).every((x) => x === 0xee)).toBe(true);
    expect(file[100]).toBe(1);
    expect(file.subarray(450, 1000).every((x) => x === 0xee)).toBe(true);
    await expect(spill.write(Buffer.alloc(151))).rejects.toBeInstanceOf(SpillAreaFullError);
    expect(await spill.write(Buffer.alloc(150, 4))).toBe(350);
    await expect(spill.read(400, 101)).rejects.toThrow(RangeError);
    expect(statSync(p('spill.bin')).size).toBe(1000);
  });
});
