// Streaming qcow2 reader: turns the bytes of a qcow2 image, read once from start to end (an HTTP
// download), into positioned writes for the target disk, without a local copy of the image and
// without qemu-img. Spec: qemu's docs/interop/qcow2.txt.
//
// How it works. The file is a sequence of host clusters. The header (cluster 0) tells where the
// active L1 table and the refcount table are; the L1 table tells where the L2 tables are; each L2
// table maps guest clusters to host clusters (or marks them zero, compressed or unallocated).
// Everything we know to expect at a host offset is an "entry" (data extent, compressed cluster,
// L2 table, L1 table, refcount table, refcount block to skip); entries are kept in runs sorted by
// host offset in a min-heap, and the stream is cut into segments at entry boundaries:
//   - a data segment is yielded at its guest offset(s) at once (zero-copy subarray of the chunk);
//   - metadata and compressed clusters are accumulated, then parsed or decompressed;
//   - bytes nothing claims are kept in "limbo" while the mapping is incomplete (some L2 table not
//     seen yet, or the L1 table not seen yet): in RAM up to maxBufferedBytes, beyond that in the
//     SpillArea. When a table seen later maps them, they are read back from limbo and yielded.
//     Once every L2 table of the active L1 has been parsed the mapping is complete: limbo is
//     dropped and unclaimed bytes (refcount blocks, snapshot tables, free clusters) are skipped.
// Data that a known L2 entry maps but whose refcount may be > 1 (QCOW_OFLAG_COPIED clear: shared
// with a snapshot) also goes to limbo while the mapping is incomplete, because a table seen later
// may map it again. Compressed bytes go to limbo too (a compressed cluster's last sector is shared
// with the next one, which may belong to an L2 table not seen yet) and are released as soon as
// the exact extent of each deflate stream is known, so limbo stays small for `qemu-img convert -c`
// output. Compressed clusters of 16 KiB and more are inflated by a worker thread, in batches, so
// decompression runs on the other core while this thread parses.
//
// Memory: the L1 table, the pending extents of L2 tables already parsed (L2 tables themselves are
// dropped once parsed), one cluster being accumulated per active entry, up to maxOpBytes being
// coalesced, up to 16 MiB of clusters being decompressed, and limbo RAM up to maxBufferedBytes.
import type { Worker } from 'node:worker_threads';
import zlib from 'node:zlib';
import type { Logger } from '../log.js';
import type { SpillArea, WriteOp } from './write-ops.js';
import { startPipelineWorker } from './pipeline-worker.js';

/** An image Ferrum cannot or will not write; the message is meant for the operator. */
export class Qcow2Error extends Error {
  override readonly name = 'Qcow2Error';
  constructor(message: string, opts?: { cause?: unknown }) {
    super(message, opts?.cause === undefined ? undefined : { cause: opts.cause });
  }
}

export interface Qcow2HeaderExtension {
  type: number;
  offset: number;
  length: number;
}

export interface Qcow2Header {
  version: 2 | 3;
  clusterBits: number;
  clusterSize: number;
  virtualSize: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: 'zlib' | 'zstd';
  /** Incompatible bit 0: refcounts may be stale (lazy refcounts); the mapping is still valid. */
  dirty: boolean;
  extendedL2: boolean;
  /** Guest clusters mapped by one L2 table. */
  l2Entries: number;
  extensions: Qcow2HeaderExtension[];
}

export interface Qcow2ReadStats {
  inputBytes: number;
  /** Bytes yielded in DataOps (a cluster mapped twice counts twice). */
  dataBytes: number;
  zeroBytes: number;
  compressedClusters: number;
  /** Bytes this reader wrote to the SpillArea. */
  spilledBytes: number;
  /** Bytes that went to limbo (RAM or spill) because their mapping was not known yet. */
  limboBytes: number;
  /** Highest RAM held in limbo; bounded by maxBufferedBytes (plus one 64 KiB entry). */
  peakBufferedBytes: number;
}

export interface Qcow2ReadOptions {
  spill: SpillArea;
  /**
   * RAM for bytes whose placement is not known yet (data before its L2 table, or before the L1
   * table); beyond it they go to the SpillArea. Default 64 MiB; 0 spills at once.
   */
  maxBufferedBytes?: number;
  /** Adjacent data is coalesced into DataOps of up to this many bytes. Default 4 MiB. */
  maxOpBytes?: number;
  /**
   * False when the consumer gathers adjacent data itself (the device writer stages it into its
   * aligned buffers): pieces from different network chunks are then yielded as they are instead of
   * being copied together first. Default true.
   */
  coalesceByCopy?: boolean;
  /**
   * The source's chunks are reused once the next is asked for (a transient download): what the
   * reader keeps across chunks is copied, no DataOp spans two chunks, and every DataOp says
   * `transient` (the consumer is done with it before it asks for the next op).
   */
  transientInput?: boolean;
  log?: Logger;
  /** Filled in while reading. */
  stats?: Qcow2ReadStats;
}

const MAGIC = 0x514649fb;
const INCOMPAT_DIRTY = 1n;
const INCOMPAT_CORRUPT = 2n;
const INCOMPAT_DATA_FILE = 4n;
const INCOMPAT_COMPRESSION = 8n;
const INCOMPAT_EXTL2 = 16n;
const INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
const EXT_FEATURE_TABLE = 0x6803f857;
const MAX_L1_BYTES = 32 * 1024 * 1024; // qemu's QCOW_MAX_L1_SIZE
const MAX_REFTABLE_BYTES = 8 * 1024 * 1024; // qemu's QCOW_MAX_REFTABLE_SIZE
const TWO32 = 0x1_0000_0000;
const MIB = 1024 * 1024;

const EMPTY = Buffer.alloc(0);
const hex = (n: number): string => `0x${n.toString(16)}`;

function u64(buf: Buffer, off: number, what: string): number {
  const v = buf.readBigUInt64BE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Qcow2Error(`invalid qcow2 image: ${what} (${v}) is too large`);
  return Number(v);
}

function zstdAvailable(): boolean {
  return typeof (zlib as unknown as { zstdDecompressSync?: unknown }).zstdDecompressSync === 'function';
}

function featureNames(buf: Buffer, exts: Qcow2HeaderExtension[]): Map<number, string> {
  const names = new Map<number, string>();
  for (const e of exts) {
    if (e.type !== EXT_FEATURE_TABLE) continue;
    for (let p = e.offset; p + 48 <= e.offset + e.length; p += 48) {
      if (buf[p] !== 0) continue; // only incompatible features matter here
      const raw = buf.subarray(p + 2, p + 48);
      const nul = raw.indexOf(0);
      names.set(buf[p + 1]!, raw.subarray(0, nul < 0 ? raw.length : nul).toString('latin1').replace(/[^\x20-\x7e]/g, '?'));
    }
  }
  return names;
}

/**
 * Parses and validates a qcow2 header. `buf` must start at byte 0 of the image and should hold the
 * whole first cluster (header extensions live there); at least 104 bytes (72 for version 2).
 * Throws Qcow2Error for anything Ferrum refuses: not qcow2, other versions, encryption, backing
 * files, external data files, unknown incompatible features, corrupt images, out-of-range sizes.
 */
export function parseQcow2Header(buf: Buffer): Qcow2Header {
  if (buf.length < 4 || buf.readUInt32BE(0) !== MAGIC) throw new Qcow2Error('not a qcow2 image (bad magic)');
  if (buf.length < 72) throw new Qcow2Error('qcow2 image is truncated: the header is incomplete');
  const version = buf.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw new Qcow2Error(`unsupported qcow2 version ${version} (versions 2 and 3 are supported)`);
  if (version === 3 && buf.length < 104) throw new Qcow2Error('qcow2 image is truncated: the header is incomplete');
  const backingFileOffset = buf.readBigUInt64BE(8);
  const backingFileSize = buf.readUInt32BE(16);
  const clusterBits = buf.readUInt32BE(20);
  if (clusterBits < 9 || clusterBits > 21) {
    throw new Qcow2Error(clusterSizeError(clusterBits));
  }
  const clusterSize = 2 ** clusterBits;
  const cryptMethod = buf.readUInt32BE(32);
  if (cryptMethod !== 0) {
    const how = cryptMethod === 1 ? 'AES' : cryptMethod === 2 ? 'LUKS' : `method ${cryptMethod}`;
    throw new Qcow2Error(`encrypted qcow2 images are not supported (${how} encryption); provide an unencrypted image`);
  }
  if (backingFileOffset !== 0n) {
    let name = '';
    const off = Number(backingFileOffset);
    if (backingFileOffset < BigInt(buf.length) && backingFileSize > 0) {
      name = buf.subarray(off, Math.min(off + Math.min(backingFileSize, 1023), buf.length)).toString('utf8');
      name = ` (${JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name)})`;
    }
    throw new Qcow2Error(
      `qcow2 images with a backing file are not allowed${name}: the image must be self-contained; ` +
        'flatten it with `qemu-img convert -O qcow2`',
    );
  }

  let incompatibleFeatures = 0n;
  let compatibleFeatures = 0n;
  let autoclearFeatures = 0n;
  let refcountOrder = 4;
  let headerLength = 72;
  let compressionType: 'zlib' | 'zstd' = 'zlib';
  if (version === 3) {
    incompatibleFeatures = buf.readBigUInt64BE(72);
    compatibleFeatures = buf.readBigUInt64BE(80);
    autoclearFeatures = buf.readBigUInt64BE(88);
    refcountOrder = buf.readUInt32BE(96);
    headerLength = buf.readUInt32BE(100);
    if (headerLength < 104 || headerLength % 8 !== 0 || headerLength > clusterSize) {
      throw new Qcow2Error(`invalid qcow2 image: header length ${headerLength}`);
    }
    if (refcountOrder > 6) throw new Qcow2Error(`invalid qcow2 image: refcount order ${refcountOrder}`);
  }

  const extensions: Qcow2HeaderExtension[] = [];
  const extEnd = Math.min(buf.length, clusterSize);
  for (let p = headerLength; p + 8 <= extEnd; ) {
    const type = buf.readUInt32BE(p);
    const length = buf.readUInt32BE(p + 4);
    if (type === 0) break;
    if (p + 8 + length > clusterSize) throw new Qcow2Error(`invalid qcow2 image: header extension ${hex(type)} overflows the header cluster`);
    if (p + 8 + length > buf.length) break; // the caller gave only part of the first cluster
    extensions.push({ type, offset: p + 8, length });
    p += 8 + Math.ceil(length / 8) * 8;
  }

  const unknown = incompatibleFeatures & ~INCOMPAT_KNOWN;
  if (unknown !== 0n) {
    const names = featureNames(buf, extensions);
    const bits: string[] = [];
    for (let b = 0; b < 64; b++) {
      if ((unknown >> BigInt(b)) & 1n) bits.push(names.has(b) ? `bit ${b} (${names.get(b)})` : `bit ${b}`);
    }
    throw new Qcow2Error(`qcow2 image uses unsupported incompatible features: ${bits.join(', ')}`);
  }
  if (incompatibleFeatures & INCOMPAT_CORRUPT) {
    throw new Qcow2Error('qcow2 image is marked corrupt; repair it with `qemu-img check -r all` first');
  }
  if (incompatibleFeatures & INCOMPAT_DATA_FILE) {
    throw new Qcow2Error('qcow2 images with an external data file are not supported: the image must be self-contained');
  }
  const ctField = headerLength > 104 ? buf[104] : 0;
  if (headerLength > 104 && buf.length < 105) throw new Qcow2Error('qcow2 image is truncated: the header is incomplete');
  if (incompatibleFeatures & INCOMPAT_COMPRESSION) {
    if (ctField === 1) compressionType = 'zstd';
    else throw new Qcow2Error(`qcow2 image uses unsupported compression type ${ctField ?? 'missing'}`);
  } else if (ctField !== 0) {
    throw new Qcow2Error(`invalid qcow2 image: compression type ${ctField} set without the compression type feature bit`);
  }
  const extendedL2 = (incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
  if (extendedL2 && clusterBits < 14) {
    throw new Qcow2Error(`invalid qcow2 image: extended L2 entries need clusters of at least 16 KiB (cluster size is ${clusterSize})`);
  }

  const sizeBig = buf.readBigUInt64BE(24);
  if (sizeBig > BigInt(Number.MAX_SAFE_INTEGER)) throw new Qcow2Error(`qcow2 virtual size ${sizeBig} is too large`);
  const virtualSize = Number(sizeBig);
  const l2Entries = clusterSize / (extendedL2 ? 16 : 8);
  const l1Size = buf.readUInt32BE(36);
  const l1Needed = Math.ceil(virtualSize / (clusterSize * l2Entries));
  if (l1Size < l1Needed) {
    throw new Qcow2Error(`invalid qcow2 image: L1 table (${l1Size} entries) too small for virtual size ${virtualSize}`);
  }
  if (l1Size * 8 > MAX_L1_BYTES) throw new Qcow2Error(`qcow2 L1 table too large (${l1Size} entries)`);
  const l1TableOffset = u64(buf, 40, 'L1 table offset');
  if (l1Size > 0 && (l1TableOffset === 0 || l1TableOffset % clusterSize !== 0)) {
    throw new Qcow2Error(`invalid qcow2 image: L1 table offset ${hex(l1TableOffset)}`);
  }
  const refcountTableOffset = u64(buf, 48, 'refcount table offset');
  if (refcountTableOffset % clusterSize !== 0) {
    throw new Qcow2Error(`invalid qcow2 image: refcount table offset ${hex(refcountTableOffset)}`);
  }
  const refcountTableClusters = buf.readUInt32BE(56);
  if (refcountTableClusters * clusterSize > MAX_REFTABLE_BYTES) {
    throw new Qcow2Error(`qcow2 refcount table too large (${refcountTableClusters} clusters)`);
  }
  const nbSnapshots = buf.readUInt32BE(60);
  const snapshotsOffset = u64(buf, 64, 'snapshot table offset');

  return {
    version,
    clusterBits,
    clusterSize,
    virtualSize,
    cryptMethod,
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    nbSnapshots,
    snapshotsOffset,
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    compressionType,
    dirty: (incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
    extendedL2,
    l2Entries,
    extensions,
  };
}

/** Checks what the first bytes of a stream can tell (magic, version, cluster size). */
function checkEarly(buf: Buffer): void {
  if (buf.readUInt32BE(0) !== MAGIC) throw new Qcow2Error('not a qcow2 image (bad magic)');
  if (buf.length >= 8) {
    const version = buf.readUInt32BE(4);
    if (version !== 2 && version !== 3) throw new Qcow2Error(`unsupported qcow2 version ${version} (versions 2 and 3 are supported)`);
  }
  if (buf.length >= 24) {
    const bits = buf.readUInt32BE(20);
    if (bits < 9 || bits > 21) throw new Qcow2Error(clusterSizeError(bits));
  }
}

function clusterSizeError(bits: number): string {
  return `unsupported qcow2 cluster size 2^${bits} bytes (512 B to 2 MiB are supported)`;
}

// ---------------------------------------------------------------------------------------------
// Entries: what is expected at a host offset.

const K_DATA = 0;
const K_COMP = 1;
const K_L2 = 2;
const K_L1 = 3;
const K_RT = 4;
const K_SKIP = 5;
const KIND_NAMES = ['data cluster', 'compressed cluster', 'L2 table', 'L1 table', 'refcount table', 'refcount block'];

interface Entry {
  kind: number;
  host: number;
  len: number;
  /** Guest offset (data, compressed); L1 index (L2). */
  guest: number;
  /** Data: QCOW_OFLAG_COPIED (refcount exactly 1, so nothing else can map it). */
  copied: boolean;
}

/** Entries sorted by host offset, consumed front to back. */
interface Run {
  entries: Entry[];
  i: number;
}

class RunHeap {
  private a: Run[] = [];

  get size(): number {
    return this.a.length;
  }

  /** Host offset of the next expected entry, Infinity when none. */
  peekHost(): number {
    const r = this.a[0];
    return r === undefined ? Infinity : r.entries[r.i]!.host;
  }

  push(r: Run): void {
    const a = this.a;
    a.push(r);
    let i = a.length - 1;
    const key = r.entries[r.i]!.host;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pr = a[p]!;
      if (pr.entries[pr.i]!.host <= key) break;
      a[i] = pr;
      i = p;
    }
    a[i] = r;
  }

  pop(): Run | undefined {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (top === undefined || last === undefined || a.length === 0) return top;
    const key = last.entries[last.i]!.host;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const r = l + 1;
      let c = l;
      if (r < a.length && a[r]!.entries[a[r]!.i]!.host < a[l]!.entries[a[l]!.i]!.host) c = r;
      const cr = a[c]!;
      if (cr.entries[cr.i]!.host >= key) break;
      a[i] = cr;
      i = c;
    }
    a[i] = last;
    return top;
  }

  *remaining(): Iterable<Entry> {
    for (const r of this.a) for (let i = r.i; i < r.entries.length; i++) yield r.entries[i]!;
  }
}

interface Active {
  e: Entry;
  exclusive: boolean;
  pieces: Buffer[] | null;
  got: number;
}

// ---------------------------------------------------------------------------------------------
// Limbo: bytes whose meaning is not known yet, by host offset; RAM first, then the SpillArea.

const LIMBO_ENTRY_MAX = 64 * 1024;
/** Largest single write to the spill area. */
const SPILL_BATCH = MIB;

interface LimboEntry {
  host: number;
  len: number;
  /** Copies, in RAM; null once spilled or dropped. */
  pieces: Buffer[] | null;
  spillPos: number;
  /** Sorted disjoint [start, end) pairs (relative) that nothing can need any more. */
  released: number[];
  releasedBytes: number;
  dead: boolean;
}

class Limbo {
  private entries: LimboEntry[] = [];
  /** Entries before this index are not in RAM. */
  private ramFrom = 0;
  private deadCount = 0;
  ramBytes = 0;
  peakRam = 0;
  spilled = 0;
  added = 0;
  onFirstSpill: (() => void) | null = null;

  constructor(
    private readonly spill: SpillArea,
    private readonly budget: number,
  ) {}

  get empty(): boolean {
    return this.entries.length === 0;
  }

  clear(): void {
    this.entries = [];
    this.ramFrom = 0;
    this.deadCount = 0;
    this.ramBytes = 0;
  }

  /** Copies `seg` (the bytes at host offset `host`, after everything added before). */
  async add(host: number, seg: Buffer): Promise<void> {
    this.added += seg.length;
    let off = 0;
    while (off < seg.length) {
      const last = this.entries[this.entries.length - 1];
      let n: number;
      if (last && last.pieces && !last.dead && last.host + last.len === host + off && last.len < LIMBO_ENTRY_MAX) {
        n = Math.min(seg.length - off, LIMBO_ENTRY_MAX - last.len);
        last.pieces.push(Buffer.from(seg.subarray(off, off + n)));
        last.len += n;
      } else {
        n = Math.min(seg.length - off, LIMBO_ENTRY_MAX);
        this.entries.push({
          host: host + off,
          len: n,
          pieces: [Buffer.from(seg.subarray(off, off + n))],
          spillPos: -1,
          released: [],
          releasedBytes: 0,
          dead: false,
        });
      }
      this.ramBytes += n;
      off += n;
      if (this.ramBytes > this.peakRam) this.peakRam = this.ramBytes;
      while (this.ramBytes > this.budget && (await this.evictOldest()));
    }
  }

  /**
   * Moves the oldest entries in RAM to the spill area, in one write of up to SPILL_BATCH bytes,
   * and merges them with their spilled neighbours so a long run of spilled data stays one entry.
   */
  private async evictOldest(): Promise<boolean> {
    const entries = this.entries;
    while (this.ramFrom < entries.length && !entries[this.ramFrom]!.pieces) this.ramFrom++;
    const from = this.ramFrom;
    const batch: LimboEntry[] = [];
    const parts: Buffer[] = [];
    let bytes = 0;
    let to = from;
    for (; to < entries.length && bytes < SPILL_BATCH; to++) {
      const e = entries[to]!;
      if (!e.pieces) continue; // dead
      batch.push(e);
      parts.push(...e.pieces);
      bytes += e.len;
    }
    if (batch.length === 0) return false;
    if (this.spilled === 0) this.onFirstSpill?.();
    let pos: number;
    try {
      pos = await this.spill.write(parts.length === 1 ? parts[0]! : Buffer.concat(parts, bytes));
    } catch (err) {
      throw new Qcow2Error(
        `qcow2 image needs more scratch space than the target disk has beyond the image's virtual size ` +
          `(${this.spilled + bytes} bytes so far): its tables come after much of the data they map; ` +
          'rewrite it with `qemu-img convert -O qcow2` to store it in order',
        { cause: err },
      );
    }
    this.spilled += bytes;
    this.ramBytes -= bytes;
    const merged: LimboEntry[] = [];
    let prev: LimboEntry | undefined = from > 0 ? entries[from - 1] : undefined;
    if (prev && (prev.dead || prev.pieces)) prev = undefined;
    for (const e of batch) {
      e.spillPos = pos;
      e.pieces = null;
      pos += e.len;
      if (prev && prev.host + prev.len === e.host && prev.spillPos + prev.len === e.spillPos) {
        for (const x of e.released) prev.released.push(x + prev.len);
        prev.releasedBytes += e.releasedBytes;
        prev.len += e.len;
      } else {
        merged.push(e);
        prev = e;
      }
    }
    // Dead entries between `from` and `to` go too.
    for (let i = from; i < to; i++) if (entries[i]!.dead) this.deadCount--;
    entries.splice(from, to - from, ...merged);
    this.ramFrom = from + merged.length;
    return true;
  }

  private find(host: number): number {
    // Index of the last entry with entry.host <= host, or -1.
    const entries = this.entries;
    let lo = 0;
    let hi = entries.length - 1;
    let ans = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (entries[mid]!.host <= host) {
        ans = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return ans;
  }

  /**
   * The longest run of stored bytes starting at `host`, up to `len` bytes; empty when the first
   * byte is not stored.
   */
  async read(host: number, len: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let got = 0;
    let i = this.find(host);
    while (got < len && i >= 0 && i < this.entries.length) {
      const e = this.entries[i]!;
      const at = host + got;
      if (e.dead || at < e.host || at >= e.host + e.len) break;
      const rel = at - e.host;
      let n = Math.min(len - got, e.len - rel);
      if (e.pieces) {
        if (e.pieces.length > 1) e.pieces = [Buffer.concat(e.pieces, e.len)];
        parts.push(e.pieces[0]!.subarray(rel, rel + n));
      } else {
        // One read for a run of entries that follow each other both here and in the spill area.
        let last = e;
        for (let j = i + 1; got + n < len && j < this.entries.length; j++) {
          const f = this.entries[j]!;
          if (f.dead || f.pieces || f.host !== last.host + last.len || f.spillPos !== last.spillPos + last.len) break;
          n += Math.min(len - got - n, f.len);
          last = f;
          i = j;
        }
        parts.push(await this.spill.read(e.spillPos + rel, n));
      }
      got += n;
      i++;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, got);
  }

  /** Marks [host, host+len) as never needed again; entries wholly released are dropped. */
  release(host: number, len: number): void {
    let i = Math.max(0, this.find(host));
    const end = host + len;
    for (; i < this.entries.length; i++) {
      const e = this.entries[i]!;
      if (e.host >= end) break;
      if (e.dead || e.host + e.len <= host) continue;
      const s = Math.max(host, e.host) - e.host;
      const t = Math.min(end, e.host + e.len) - e.host;
      e.releasedBytes += addInterval(e.released, s, t);
      if (e.releasedBytes >= e.len) {
        e.dead = true;
        if (e.pieces) {
          e.pieces = null;
          this.ramBytes -= e.len;
        }
        this.deadCount++;
      }
    }
    if (this.deadCount > 256 && this.deadCount * 2 > this.entries.length) {
      this.entries = this.entries.filter((e) => !e.dead);
      this.deadCount = 0;
      this.ramFrom = 0;
    }
  }
}

/** Adds [s, t) to a sorted list of disjoint intervals; returns how many bytes were new. */
function addInterval(list: number[], s: number, t: number): number {
  // Fast path: appending after the last interval.
  const n = list.length;
  if (n === 0 || s > list[n - 1]!) {
    list.push(s, t);
    return t - s;
  }
  if (s === list[n - 1]!) {
    list[n - 1] = t > list[n - 1]! ? t : list[n - 1]!;
    return Math.max(0, t - s);
  }
  let before = 0;
  for (let k = 0; k < n; k += 2) before += list[k + 1]! - list[k]!;
  const merged: number[] = [];
  let placed = false;
  for (let k = 0; k < n; k += 2) {
    const a = list[k]!;
    const b = list[k + 1]!;
    if (b < s || placed) merged.push(a, b);
    else if (a > t) {
      merged.push(s, t, a, b);
      placed = true;
    } else {
      s = Math.min(s, a);
      t = Math.max(t, b);
    }
  }
  if (!placed) merged.push(s, t);
  list.length = 0;
  let after = 0;
  for (let k = 0; k < merged.length; k += 2) {
    list.push(merged[k]!, merged[k + 1]!);
    after += merged[k + 1]! - merged[k]!;
  }
  return after - before;
}

// ---------------------------------------------------------------------------------------------
// Decompression.

/** Clusters at least this big are inflated on a worker thread; smaller ones inline. */
const WORKER_INFLATE_MIN = 16 * 1024;

interface InflateResult {
  buffer: Buffer;
  engine: { bytesWritten: number };
}

interface Inflight {
  e: Entry;
  /** The compressed bytes, until inflated. */
  input: Buffer | null;
  release: boolean;
  done: boolean;
  out: Buffer;
  /** Compressed bytes the stream really used (its extent in the descriptor is rounded to sectors). */
  consumed: number;
  err: unknown;
  /** The cluster was cut short by the end of the stream. */
  atEof: boolean;
  /** Set once the job is sent to the worker. */
  promise?: Promise<void>;
}

function inflateOptions(cs: number, strict: boolean): zlib.ZlibOptions {
  return {
    info: true,
    // Like qemu, accept a stream that fills the cluster without an end marker, except at the end
    // of the file where that means the file is cut short.
    finishFlush: strict ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH,
    maxOutputLength: cs,
    chunkSize: cs,
  } as zlib.ZlibOptions;
}

function inflateInline(job: Inflight, cs: number, zstd: boolean, strict: boolean): void {
  try {
    if (zstd) ({ out: job.out, consumed: job.consumed } = zstdCluster(job.input!, cs));
    else {
      const r = zlib.inflateRawSync(job.input!, inflateOptions(cs, strict)) as unknown as InflateResult;
      job.out = r.buffer;
      job.consumed = r.engine.bytesWritten;
    }
  } catch (err) {
    job.err = err;
  }
  job.input = null;
  job.done = true;
}

// The worker inflates batches of clusters (what a batch costs in messages is shared by up to 64
// clusters) and hands back one buffer per batch. Its source is a string, so bundling needs nothing.
const INFLATE_WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const zlib = require('node:zlib');
parentPort.on('message', (m) => {
  const input = Buffer.from(m.input);
  const n = m.lens.length;
  const out = Buffer.allocUnsafeSlow(m.cs * n);
  const lengths = new Array(n).fill(0);
  const consumed = new Array(n).fill(0);
  const errors = new Array(n).fill(null);
  const opts = { info: true, finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: m.cs, chunkSize: m.cs };
  for (let i = 0, off = 0; i < n; off += m.lens[i], i++) {
    try {
      const r = zlib.inflateRawSync(input.subarray(off, off + m.lens[i]), opts);
      r.buffer.copy(out, i * m.cs);
      lengths[i] = r.buffer.length;
      consumed[i] = r.engine.bytesWritten;
    } catch (err) {
      errors[i] = String((err && err.message) || err);
    }
  }
  parentPort.postMessage({ id: m.id, out: out.buffer, lengths, consumed, errors }, [out.buffer]);
});
`;

interface InflateReply {
  id: number;
  out: ArrayBuffer;
  lengths: number[];
  consumed: number[];
  errors: Array<string | null>;
}

/** One worker thread inflating zlib clusters; null replies mean "do it yourself" (worker gone). */
class InflateWorker {
  private worker: Worker | null = null;
  private broken = false;
  private nextId = 0;
  private readonly waiting = new Map<number, (r: InflateReply | null) => void>();

  constructor(private readonly log: Logger | undefined) {}

  run(cs: number, inputs: Buffer[]): Promise<InflateReply | null> {
    if (this.broken) return Promise.resolve(null);
    if (!this.worker) {
      try {
        this.worker = startPipelineWorker(INFLATE_WORKER_SOURCE);
        this.worker.unref();
        this.worker.on('message', (r: InflateReply) => {
          this.waiting.get(r.id)?.(r);
          this.waiting.delete(r.id);
        });
        const fail = (err: unknown) => {
          if (!this.broken) this.log?.warn({ err }, 'qcow2: decompression worker failed; decompressing inline');
          this.broken = true;
          for (const done of this.waiting.values()) done(null);
          this.waiting.clear();
        };
        this.worker.on('error', fail);
        this.worker.on('exit', (code) => {
          if (this.waiting.size > 0) fail(new Error(`exited with code ${code}`));
        });
      } catch (err) {
        this.broken = true;
        this.log?.warn({ err }, 'qcow2: cannot start a decompression worker; decompressing inline');
        return Promise.resolve(null);
      }
    }
    let total = 0;
    for (const b of inputs) total += b.length;
    const packed = new ArrayBuffer(total);
    const view = new Uint8Array(packed);
    let off = 0;
    for (const b of inputs) {
      view.set(b, off);
      off += b.length;
    }
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.worker!.postMessage({ id, cs, input: packed, lens: inputs.map((b) => b.length) }, [packed]);
    });
  }

  close(): void {
    const w = this.worker;
    this.worker = null;
    this.broken = true;
    for (const done of this.waiting.values()) done(null);
    this.waiting.clear();
    if (w) void w.terminate();
  }
}

// ---------------------------------------------------------------------------------------------
// The parser.

class Qcow2Stream {
  private h: Qcow2Header | null = null;
  private cs = 0;
  private headerPieces: Buffer[] = [];
  private headerGot = 0;
  private headerNeed = 24;
  /** Host offset of the next stream byte. */
  private pos = 0;
  private readonly heap = new RunHeap();
  private active: Active[] = [];
  /** Entries whose host offset is behind the stream: served from limbo (LIFO). */
  private tasks: Entry[] = [];
  private sched: Entry[] = [];
  private l1Done = false;
  private pendingL2 = 0;
  private readonly limbo: Limbo;
  out: WriteOp[] = [];
  // Coalescing of adjacent data.
  private cGuest = 0;
  private cEnd = 0;
  private cPieces: Buffer[] = [];
  private cBytes = 0;
  private readonly maxOp: number;
  private readonly directOp: number;
  private inflight: Array<Inflight | null> = [];
  private inflightHead = 0;
  /** Jobs not sent to the worker yet. */
  private batch: Inflight[] = [];
  private batchBytes = 0;
  private maxInflight: number;
  private maxBatch: number;
  private readonly worker: InflateWorker;
  readonly stats: Qcow2ReadStats;

  constructor(private readonly opts: Qcow2ReadOptions) {
    this.limbo = new Limbo(opts.spill, Math.max(0, opts.maxBufferedBytes ?? 64 * MIB));
    this.maxOp = Math.max(4096, opts.maxOpBytes ?? 4 * MIB);
    this.directOp = Math.max(4096, this.maxOp >> 2);
    this.worker = new InflateWorker(opts.log);
    this.maxInflight = 8; // set per cluster size in startImage
    this.maxBatch = 1;
    this.stats = Object.assign(opts.stats ?? ({} as Qcow2ReadStats), {
      inputBytes: 0,
      dataBytes: 0,
      zeroBytes: 0,
      compressedClusters: 0,
      spilledBytes: 0,
      limboBytes: 0,
      peakBufferedBytes: 0,
    });
    this.limbo.onFirstSpill = () =>
      opts.log?.info(
        { pos: this.pos },
        'qcow2: the image stores data before the tables that map it; spilling it to scratch space on the target',
      );
  }

  private get complete(): boolean {
    return this.l1Done && this.pendingL2 === 0;
  }

  private updateStats(): void {
    this.stats.spilledBytes = this.limbo.spilled;
    this.stats.limboBytes = this.limbo.added;
    this.stats.peakBufferedBytes = this.limbo.peakRam;
  }

  // -- output -----------------------------------------------------------------------------------

  private emitData(guest: number, buf: Buffer): void {
    this.stats.dataBytes += buf.length;
    if (this.cBytes > 0 && (guest !== this.cEnd || this.cBytes + buf.length > this.maxOp || buf.length >= this.directOp)) this.flushData();
    if (buf.length >= this.directOp) {
      this.out.push(this.dataOp(guest, buf));
      return;
    }
    if (this.cBytes === 0) this.cGuest = guest;
    const last = this.cPieces[this.cPieces.length - 1];
    if (last && last.buffer === buf.buffer && last.byteOffset + last.length === buf.byteOffset) {
      // Adjacent views of one buffer (a chunk split at cluster boundaries, a decompressed batch):
      // widen the view instead of copying later.
      this.cPieces[this.cPieces.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + buf.length);
    } else this.cPieces.push(buf);
    this.cBytes += buf.length;
    this.cEnd = guest + buf.length;
  }

  flushData(): void {
    if (this.cBytes === 0) return;
    if (this.cPieces.length > 1 && this.opts.coalesceByCopy === false) {
      let guest = this.cGuest;
      for (const data of this.cPieces) {
        this.out.push(this.dataOp(guest, data));
        guest += data.length;
      }
    } else {
      const data = this.cPieces.length === 1 ? this.cPieces[0]! : Buffer.concat(this.cPieces, this.cBytes);
      this.out.push(this.dataOp(this.cGuest, data));
    }
    this.cPieces = [];
    this.cBytes = 0;
  }

  private dataOp(offset: number, data: Buffer): WriteOp {
    return this.opts.transientInput ? { kind: 'data', offset, data, transient: true } : { kind: 'data', offset, data };
  }

  /** A piece of the current chunk to keep beyond it: a copy when the chunk's memory is reused. */
  private keep(view: Buffer): Buffer {
    return this.opts.transientInput ? Buffer.from(view) : view;
  }

  private emitZero(guest: number, length: number): void {
    this.stats.zeroBytes += length;
    const last = this.out[this.out.length - 1];
    if (last?.kind === 'zero' && last.offset + last.length === guest) last.length += length;
    else this.out.push({ kind: 'zero', offset: guest, length });
  }

  private *drain(): Generator<WriteOp> {
    if (this.out.length === 0) return;
    const ops = this.out;
    this.out = [];
    yield* ops;
  }

  // -- input ------------------------------------------------------------------------------------

  async *feed(chunk: Buffer): AsyncGenerator<WriteOp> {
    this.stats.inputBytes += chunk.length;
    let off = 0;
    if (!this.h) {
      off = this.feedHeader(chunk);
      if (!this.h) return;
      yield* this.drain();
    }
    while (off < chunk.length) {
      if (this.complete && this.tasks.length === 0 && !this.limbo.empty) this.limbo.clear();
      this.activate();
      let end = this.pos + (chunk.length - off);
      const next = this.heap.peekHost();
      if (next < end) end = next;
      let exclusive = false;
      for (const a of this.active) {
        const e = a.e.host + a.e.len;
        if (e < end) end = e;
        if (a.exclusive) exclusive = true;
      }
      const n = end - this.pos;
      const seg = chunk.subarray(off, off + n);
      let finished = false;
      for (const a of this.active) {
        if (a.pieces) {
          a.pieces.push(this.keep(seg));
          a.got += n;
        } else if (a.e.kind === K_DATA) {
          this.emitData(a.e.guest + (this.pos - a.e.host), seg);
        }
        if (a.e.host + a.e.len === end) finished = true;
      }
      if (!exclusive && !this.complete) await this.limbo.add(this.pos, seg);
      this.pos = end;
      off += n;
      if (finished) {
        const done = this.active.filter((a) => a.e.host + a.e.len === end);
        this.active = this.active.filter((a) => a.e.host + a.e.len !== end);
        for (const a of done) this.finish(a, a.pieces ? this.pieceBuf(a) : EMPTY);
        this.commit();
        yield* this.drain();
        yield* this.runTasks();
        yield* this.pumpInflight(false);
      }
      if (this.out.length >= 64) yield* this.drain();
    }
    // Data gathered from this chunk goes out now: the chunk's memory is not the reader's to keep.
    if (this.opts.transientInput) this.flushData();
    yield* this.drain();
  }

  private pieceBuf(a: Active): Buffer {
    const p = a.pieces!;
    return p.length === 1 ? p[0]! : Buffer.concat(p, a.got);
  }

  private feedHeader(chunk: Buffer): number {
    // Cluster 0 holds the header and its extensions: collect it whole (24 bytes first, to learn
    // the cluster size).
    let off = 0;
    for (;;) {
      const take = Math.min(chunk.length - off, this.headerNeed - this.headerGot);
      if (take > 0) {
        this.headerPieces.push(this.keep(chunk.subarray(off, off + take)));
        this.headerGot += take;
        off += take;
      }
      if (this.headerGot < this.headerNeed) {
        if (this.headerNeed === 24 && this.headerGot >= 4) checkEarly(this.headerBuf());
        return off;
      }
      if (this.headerNeed === 24) {
        checkEarly(this.headerBuf());
        this.headerNeed = 2 ** this.headerBuf().readUInt32BE(20);
        continue;
      }
      const buf = this.headerBuf();
      this.startImage(parseQcow2Header(buf));
      return off;
    }
  }

  private headerBuf(): Buffer {
    if (this.headerPieces.length > 1) this.headerPieces = [Buffer.concat(this.headerPieces, this.headerGot)];
    return this.headerPieces[0] ?? Buffer.alloc(0);
  }

  private startImage(h: Qcow2Header): void {
    this.h = h;
    this.cs = h.clusterSize;
    this.pos = h.clusterSize;
    // Up to 16 MiB of clusters being decompressed, sent to the worker 4 MiB at a time.
    this.maxBatch = Math.max(1, Math.min(64, (4 * MIB) / h.clusterSize));
    this.maxInflight = Math.max(8, (16 * MIB) / h.clusterSize);
    this.headerPieces = [];
    this.out.push({ kind: 'size', virtualSize: h.virtualSize });
    if (h.dirty) this.opts.log?.info('qcow2: image is marked dirty (lazy refcounts); refcounts are not used, so this is harmless');
    if (h.l1Size === 0 || h.virtualSize === 0) this.l1Done = true;
    else {
      // Only the entries that map the virtual size matter; the rest of the table's clusters are
      // skipped (not mistaken for data).
      const used = Math.min(h.l1Size, Math.ceil(h.virtualSize / (h.clusterSize * h.l2Entries))) * 8;
      const whole = Math.ceil((h.l1Size * 8) / h.clusterSize) * h.clusterSize;
      this.sched.push({ kind: K_L1, host: h.l1TableOffset, len: used, guest: 0, copied: true });
      if (whole > used) this.sched.push({ kind: K_SKIP, host: h.l1TableOffset + used, len: whole - used, guest: 0, copied: true });
    }
    if (h.refcountTableClusters > 0 && h.refcountTableOffset >= h.clusterSize) {
      this.sched.push({ kind: K_RT, host: h.refcountTableOffset, len: h.refcountTableClusters * h.clusterSize, guest: 0, copied: true });
    }
    this.commit();
  }

  /** Moves entries whose host offset has come up from the heap to the active set. */
  private activate(): void {
    const heap = this.heap;
    while (heap.size > 0 && heap.peekHost() <= this.pos) {
      const run = heap.pop()!;
      const es = run.entries;
      while (run.i < es.length && es[run.i]!.host <= this.pos) {
        const e = es[run.i++]!;
        if (e.host < this.pos) throw new Qcow2Error(`internal error: qcow2 entry at ${hex(e.host)} missed (stream at ${hex(this.pos)})`);
        const exclusive = e.kind === K_DATA ? e.copied : e.kind !== K_COMP;
        const accumulate = e.kind !== K_DATA && e.kind !== K_SKIP;
        this.active.push({ e, exclusive, pieces: accumulate ? [] : null, got: 0 });
      }
      if (run.i < es.length) heap.push(run);
    }
  }

  /** Splits the entries scheduled since the last commit into tasks (behind) and a new run (ahead). */
  private commit(): void {
    const sched = this.sched;
    if (sched.length === 0) return;
    this.sched = [];
    const pos = this.pos;
    const ahead: Entry[] = [];
    const behind: Entry[] = [];
    for (const e of sched) {
      if (e.host >= pos) ahead.push(e);
      else if (e.host + e.len <= pos) behind.push(e);
      else if (e.kind === K_DATA) {
        const n = pos - e.host;
        behind.push({ ...e, len: n });
        ahead.push({ ...e, host: pos, len: e.len - n, guest: e.guest + n });
      } else if (e.kind === K_SKIP) {
        this.limbo.release(e.host, pos - e.host);
      } else {
        throw new Qcow2Error(`corrupt qcow2 image: ${KIND_NAMES[e.kind]} at ${hex(e.host)} overlaps other metadata`);
      }
    }
    if (ahead.length > 0) {
      let sorted = true;
      for (let i = 1; i < ahead.length; i++) {
        if (ahead[i]!.host < ahead[i - 1]!.host) {
          sorted = false;
          break;
        }
      }
      if (!sorted) ahead.sort((a, b) => a.host - b.host);
      this.heap.push({ entries: ahead, i: 0 });
    }
    for (let i = behind.length - 1; i >= 0; i--) {
      const e = behind[i]!;
      if (e.kind === K_SKIP) this.limbo.release(e.host, e.len);
      else this.tasks.push(e);
    }
  }

  /** Serves entries whose bytes went by before their mapping was known. */
  private async *runTasks(): AsyncGenerator<WriteOp> {
    while (this.tasks.length > 0) {
      const e = this.tasks.pop()!;
      if (e.kind === K_DATA) {
        for (let done = 0; done < e.len; ) {
          const n = Math.min(e.len - done, this.maxOp);
          const buf = await this.limbo.read(e.host + done, n);
          if (buf.length < n) this.notAvailable(e, e.host + done + buf.length);
          this.emitData(e.guest + done, buf);
          done += n;
          yield* this.drain();
        }
        if (e.copied) this.limbo.release(e.host, e.len);
      } else if (e.kind === K_COMP) {
        const buf = await this.limbo.read(e.host, e.len);
        if (buf.length === 0) this.notAvailable(e, e.host);
        this.startCompressed(e, buf, true);
      } else {
        const buf = await this.limbo.read(e.host, e.len);
        if (buf.length < e.len) this.notAvailable(e, e.host + buf.length);
        this.finish({ e, exclusive: true, pieces: [buf], got: buf.length }, buf);
        this.limbo.release(e.host, e.len);
      }
      this.commit();
      yield* this.drain();
      yield* this.pumpInflight(false);
    }
  }

  private notAvailable(e: Entry, at: number): never {
    const what = e.kind === K_DATA || e.kind === K_COMP ? `${KIND_NAMES[e.kind]} for guest offset ${hex(e.guest)}` : KIND_NAMES[e.kind];
    throw new Qcow2Error(
      `qcow2 image cannot be streamed: the ${what} at host offset ${hex(e.host)} is mapped only after the stream ` +
        `passed byte ${hex(at)}, which was not kept (the image is inconsistent or maps a cluster twice); ` +
        'check it with `qemu-img check` and rewrite it with `qemu-img convert -O qcow2`',
    );
  }

  // -- metadata ---------------------------------------------------------------------------------

  private finish(a: Active, buf: Buffer): void {
    switch (a.e.kind) {
      case K_L1:
        this.parseL1(buf);
        break;
      case K_L2:
        this.parseL2(buf, a.e.guest);
        this.pendingL2--;
        break;
      case K_RT:
        this.parseRefcountTable(buf);
        break;
      case K_COMP:
        this.startCompressed(a.e, buf, !this.complete);
        break;
      default:
        break;
    }
  }

  private tableOffset(hi: number, lo: number, what: string, index: number): number {
    const top = hi & 0x00ffffff;
    if (top >= 0x200000) throw new Qcow2Error(`qcow2 ${what} entry ${index} points beyond 2^53 bytes`);
    const off = top * TWO32 + ((lo & 0xfffffe00) >>> 0);
    if (off % this.cs !== 0) throw new Qcow2Error(`corrupt qcow2 image: ${what} entry ${index} points to unaligned offset ${hex(off)}`);
    return off;
  }

  private parseL1(buf: Buffer): void {
    const h = this.h!;
    const n = buf.length >> 3;
    for (let i = 0; i < n; i++) {
      const hi = buf.readUInt32BE(i * 8);
      const lo = buf.readUInt32BE(i * 8 + 4);
      if (hi === 0 && lo === 0) continue;
      const off = this.tableOffset(hi, lo, 'L1', i);
      if (off === 0) continue;
      if (off < this.cs) throw new Qcow2Error(`corrupt qcow2 image: L1 entry ${i} points into the header`);
      this.sched.push({ kind: K_L2, host: off, len: h.clusterSize, guest: i, copied: true });
      this.pendingL2++;
    }
    this.l1Done = true;
  }

  private parseRefcountTable(buf: Buffer): void {
    const n = buf.length >> 3;
    for (let i = 0; i < n; i++) {
      const hi = buf.readUInt32BE(i * 8);
      const lo = buf.readUInt32BE(i * 8 + 4);
      if (hi === 0 && lo === 0) continue;
      const top = hi & 0x00ffffff;
      if (top >= 0x200000) continue;
      const off = top * TWO32 + ((lo & 0xfffffe00) >>> 0);
      if (off === 0 || off % this.cs !== 0 || off < this.cs) continue; // only an optimisation: ignore oddities
      this.sched.push({ kind: K_SKIP, host: off, len: this.cs, guest: 0, copied: true });
    }
  }

  private parseL2(buf: Buffer, l1Index: number): void {
    const h = this.h!;
    const cs = this.cs;
    const ext = h.extendedL2;
    const esz = ext ? 16 : 8;
    const n = h.l2Entries;
    const vsize = h.virtualSize;
    const guestBase = l1Index * n * cs;
    const cb = h.clusterBits;
    const cShift = 62 - (cb - 8) - 32; // compressed descriptor: offset bits below 32 + cShift
    const cMask = 2 ** cShift - 1;
    const sMask = (1 << (cb - 8)) - 1;
    // Pending data extent and zero run, merged across entries.
    let dHost = 0;
    let dGuest = 0;
    let dLen = 0;
    let dCopied = false;
    const addData = (host: number, guest: number, len: number, copied: boolean): void => {
      if (dLen > 0 && dHost + dLen === host && dGuest + dLen === guest && dCopied === copied) {
        dLen += len;
        return;
      }
      if (dLen > 0) this.sched.push({ kind: K_DATA, host: dHost, len: dLen, guest: dGuest, copied: dCopied });
      dHost = host;
      dGuest = guest;
      dLen = len;
      dCopied = copied;
    };
    for (let i = 0; i < n; i++) {
      const guest = guestBase + i * cs;
      if (guest >= vsize) break;
      const p = i * esz;
      const hi = buf.readUInt32BE(p);
      const lo = buf.readUInt32BE(p + 4);
      const zeroBits = ext ? buf.readUInt32BE(p + 8) : 0;
      const allocBits = ext ? buf.readUInt32BE(p + 12) : 0;
      if (hi === 0 && lo === 0 && zeroBits === 0 && allocBits === 0) continue;
      const clen = Math.min(cs, vsize - guest);
      if (hi & 0x40000000) {
        // Compressed cluster.
        if (h.compressionType === 'zstd' && !zstdAvailable()) {
          throw new Qcow2Error(
            `qcow2 image has zstd-compressed clusters, which this agent's Node.js ${process.version} cannot decompress ` +
              '(needs Node.js 22.15 or later); recompress it with `qemu-img convert -O qcow2 -c -o compression_type=zlib`',
          );
        }
        const top = hi & cMask;
        if (top >= 0x200000) throw new Qcow2Error(`qcow2 compressed cluster for guest offset ${hex(guest)} lies beyond 2^53 bytes`);
        const host = top * TWO32 + lo;
        const sectors = ((hi >>> cShift) & sMask) + 1;
        const len = sectors * 512 - (host % 512);
        if (host < cs) throw new Qcow2Error(`corrupt qcow2 image: compressed cluster for guest offset ${hex(guest)} points into the header`);
        this.sched.push({ kind: K_COMP, host, len, guest, copied: false });
        continue;
      }
      const copied = hi >>> 31 === 1;
      const top = hi & 0x00ffffff;
      if (top >= 0x200000) throw new Qcow2Error(`qcow2 cluster for guest offset ${hex(guest)} lies beyond 2^53 bytes`);
      const host = top * TWO32 + ((lo & 0xfffffe00) >>> 0);
      if (host % cs !== 0) throw new Qcow2Error(`corrupt qcow2 image: cluster for guest offset ${hex(guest)} has unaligned host offset ${hex(host)}`);
      if (host !== 0 && host < cs) throw new Qcow2Error(`corrupt qcow2 image: cluster for guest offset ${hex(guest)} points into the header`);
      if (!ext) {
        if (lo & 1) {
          if (h.version < 3) throw new Qcow2Error(`corrupt qcow2 image: zero cluster at guest offset ${hex(guest)} in a version 2 image`);
          this.emitZero(guest, clen);
        } else if (host !== 0) {
          addData(host, guest, clen, copied);
        }
        continue;
      }
      // Extended L2 entry: 32 subclusters, each allocated, zero or unallocated.
      if ((allocBits & zeroBits) !== 0) throw new Qcow2Error(`corrupt qcow2 image: subcluster both allocated and zero at guest offset ${hex(guest)}`);
      if (allocBits !== 0 && host === 0) throw new Qcow2Error(`corrupt qcow2 image: allocated subclusters without a host cluster at guest offset ${hex(guest)}`);
      if (allocBits === 0xffffffff) {
        addData(host, guest, clen, copied);
        continue;
      }
      const sc = cs / 32;
      for (let j = 0; j < 32; ) {
        const bit = 1 << j;
        const isAlloc = (allocBits & bit) !== 0;
        const isZero = (zeroBits & bit) !== 0;
        let k = j + 1;
        while (k < 32 && ((allocBits >>> k) & 1) === (isAlloc ? 1 : 0) && ((zeroBits >>> k) & 1) === (isZero ? 1 : 0)) k++;
        const g = guest + j * sc;
        const len = Math.min((k - j) * sc, vsize - g);
        if (len > 0) {
          if (isAlloc) addData(host + j * sc, g, len, copied);
          else if (isZero) this.emitZero(g, len);
        }
        j = k;
      }
    }
    if (dLen > 0) this.sched.push({ kind: K_DATA, host: dHost, len: dLen, guest: dGuest, copied: dCopied });
  }

  /**
   * Starts decompressing a compressed cluster. zlib clusters of 16 KiB and more are inflated by a
   * worker thread, in batches, so decompression runs on the other core while this thread parses
   * (and the pipeline hashes and writes); results are yielded in stream order (pumpInflight).
   * Small clusters, zstd and the last cluster of a cut-short stream are done inline.
   */
  private startCompressed(e: Entry, buf: Buffer, releaseLimbo: boolean, strict = false): void {
    const job: Inflight = { e, input: buf, release: releaseLimbo, done: false, out: EMPTY, consumed: 0, err: null, atEof: strict };
    this.inflight.push(job);
    const zstd = this.h!.compressionType === 'zstd';
    if (zstd || this.cs < WORKER_INFLATE_MIN || strict) {
      inflateInline(job, this.cs, zstd, strict);
      return;
    }
    this.batch.push(job);
    this.batchBytes += buf.length;
    if (this.batch.length >= this.maxBatch || this.batchBytes >= MIB) this.sendBatch();
  }

  private sendBatch(): void {
    const jobs = this.batch;
    if (jobs.length === 0) return;
    this.batch = [];
    this.batchBytes = 0;
    const cs = this.cs;
    const promise = this.worker.run(cs, jobs.map((j) => j.input!)).then((r) => {
      jobs.forEach((job, i) => {
        if (!r) return inflateInline(job, cs, false, false);
        if (r.errors[i] !== null) job.err = new Error(r.errors[i]!);
        else {
          job.out = Buffer.from(r.out, i * cs, r.lengths[i]);
          job.consumed = r.consumed[i]!;
        }
        job.input = null;
        job.done = true;
      });
    });
    for (const job of jobs) job.promise = promise;
  }

  /** Yields the decompressed clusters that are done, in order; waits while too many are in flight (or for all, at the end). */
  private async *pumpInflight(all: boolean): AsyncGenerator<WriteOp> {
    const q = this.inflight;
    if (all) this.sendBatch();
    while (this.inflightHead < q.length) {
      const job = q[this.inflightHead]!;
      if (!job.done) {
        if (!all && q.length - this.inflightHead <= this.maxInflight) return;
        if (!job.promise) this.sendBatch();
        await job.promise;
      }
      q[this.inflightHead++] = null;
      if (this.inflightHead === q.length) {
        q.length = 0;
        this.inflightHead = 0;
      } else if (this.inflightHead >= 256) {
        q.splice(0, this.inflightHead);
        this.inflightHead = 0;
      }
      this.completeCompressed(job);
      yield* this.drain();
    }
  }

  /** Stops the worker (the reader is done or abandoned). */
  close(): void {
    this.worker.close();
  }

  private completeCompressed(job: Inflight): void {
    const { e, err, out } = job;
    const cs = this.cs;
    if (err && job.atEof) throw new Qcow2Error(`qcow2 image is truncated: the stream ended at byte ${this.pos}, inside ${this.describe(e)}`);
    if (err) {
      if (err instanceof Qcow2Error) throw err;
      throw new Qcow2Error(
        `corrupt qcow2 image: compressed cluster for guest offset ${hex(e.guest)} at host offset ${hex(e.host)} ` +
          `does not decompress (${(err as Error).message})`,
        { cause: err },
      );
    }
    if (out.length !== cs) {
      throw new Qcow2Error(
        `corrupt qcow2 image: compressed cluster for guest offset ${hex(e.guest)} decompresses to ${out.length} bytes, not ${cs}`,
      );
    }
    this.stats.compressedClusters++;
    if (job.release) this.limbo.release(e.host, job.consumed);
    const len = Math.min(cs, this.h!.virtualSize - e.guest);
    this.emitData(e.guest, len === cs ? out : out.subarray(0, len));
  }

  // -- end --------------------------------------------------------------------------------------

  async *end(): AsyncGenerator<WriteOp> {
    if (!this.h) {
      if (this.headerGot === 0) throw new Qcow2Error('qcow2 image is empty');
      const buf = this.headerBuf();
      if (buf.length < 4) {
        const magic = Buffer.from([0x51, 0x46, 0x49, 0xfb]);
        if (!buf.equals(magic.subarray(0, buf.length))) throw new Qcow2Error('not a qcow2 image (bad magic)');
      } else checkEarly(buf);
      // A refusal the partial header already shows is more useful than "truncated".
      if (buf.length >= 104) parseQcow2Header(buf);
      throw new Qcow2Error(`qcow2 image is truncated: the stream ended at byte ${this.headerGot}, inside the header`);
    }
    yield* this.runTasks();
    const missing: string[] = [];
    for (const a of this.active) {
      if (a.e.kind === K_COMP && a.got > 0) {
        // The last compressed cluster's sectors may reach past the end of the file (strict: the
        // deflate stream itself must be whole).
        this.startCompressed(a.e, this.pieceBuf(a), false, true);
      } else if (a.e.kind !== K_SKIP && a.e.kind !== K_RT) {
        missing.push(this.describe(a.e));
      }
    }
    if (missing.length === 0) yield* this.pumpInflight(true);
    this.active = [];
    for (const e of this.heap.remaining()) {
      if (e.kind === K_SKIP || e.kind === K_RT) continue;
      missing.push(this.describe(e));
      if (missing.length >= 3) break;
    }
    if (missing.length > 0) {
      throw new Qcow2Error(
        `qcow2 image is truncated: the stream ended at byte ${this.pos} before ${missing.join(', ')}${missing.length >= 3 ? ', …' : ''}`,
      );
    }
    this.flushData();
    this.updateStats();
    this.opts.log?.debug({ ...this.stats }, 'qcow2: image read');
    yield* this.drain();
  }

  private describe(e: Entry): string {
    const g = e.kind === K_DATA || e.kind === K_COMP ? ` for guest offset ${hex(e.guest)}` : '';
    return `the ${KIND_NAMES[e.kind]}${g} at byte ${e.host}`;
  }

  syncStats(): void {
    this.updateStats();
  }
}

/** One zstd frame's compressed length, from its headers (RFC 8878), so trailing bytes are ignored. */
function zstdFrameLength(buf: Buffer, at: number): number {
  if (buf.length < at + 6 || buf.readUInt32LE(at) !== 0xfd2fb528) throw new Qcow2Error('not a zstd frame');
  const fhd = buf[at + 4]!;
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictFlag = fhd & 3;
  let p = at + 5 + (single ? 0 : 1) + [0, 1, 2, 4][dictFlag]! + [single, 2, 4, 8][fcsFlag]!;
  for (;;) {
    if (p + 3 > buf.length) throw new Qcow2Error('truncated zstd frame');
    const bh = buf[p]! | (buf[p + 1]! << 8) | (buf[p + 2]! << 16);
    const last = bh & 1;
    const type = (bh >> 1) & 3;
    const size = bh >>> 3;
    if (type === 3) throw new Qcow2Error('invalid zstd block');
    p += 3 + (type === 1 ? 1 : size);
    if (last) break;
  }
  p += checksum ? 4 : 0;
  if (p > buf.length) throw new Qcow2Error('truncated zstd frame');
  return p - at;
}

function zstdCluster(buf: Buffer, cs: number): { out: Buffer; consumed: number } {
  const decompress = (zlib as unknown as { zstdDecompressSync: (b: Buffer, o?: object) => Buffer }).zstdDecompressSync;
  const parts: Buffer[] = [];
  let got = 0;
  let p = 0;
  while (got < cs) {
    const n = zstdFrameLength(buf, p);
    const out = decompress(buf.subarray(p, p + n), { maxOutputLength: cs });
    parts.push(out);
    got += out.length;
    p += n;
    if (out.length === 0 && p >= buf.length) break;
  }
  return { out: parts.length === 1 ? parts[0]! : Buffer.concat(parts, got), consumed: p };
}

/**
 * Reads a qcow2 image from `source` (its bytes in order, any chunk sizes) and yields the writes
 * that reproduce its guest content: a SizeOp first, then DataOps and ZeroOps in no particular
 * order; ranges not covered read as zeros on the target. DataOps may share memory with the
 * source's chunks. Throws Qcow2Error for invalid, unsupported or truncated images.
 */
export async function* readQcow2(source: AsyncIterable<Buffer | Uint8Array>, opts: Qcow2ReadOptions): AsyncGenerator<WriteOp> {
  const s = new Qcow2Stream(opts);
  try {
    for await (const c of source) {
      if (c.length === 0) continue;
      const chunk = Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
      yield* s.feed(chunk);
    }
    yield* s.end();
  } finally {
    s.syncStats();
    s.close();
  }
}
