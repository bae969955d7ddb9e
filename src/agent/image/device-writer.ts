// Applies WriteOps to a block device: big aligned writes (a few in flight, on libuv's thread pool so
// the event loop stays free), all-zero blocks skipped when the device is known to read zeros
// there, explicit zeros otherwise, bounds checked against the device size, flushed at the end.
//
// Writes go around the page cache (O_DIRECT, as IPA's `dd oflag=direct`) whenever they can: in a
// ramdisk the page cache is the machine's RAM, and buffered writes of a large image are slower
// and far less steady (writeback throttling) — measured on a loop device, 6.5 GB/s direct against
// 0.5–2.7 GB/s buffered. O_DIRECT needs aligned memory, which JavaScript cannot ask for, so the
// writer finds an aligned view of each pool buffer by probing with a direct read; whatever is not
// aligned (odd offsets or lengths) falls back to the buffered handle.
import { readSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { AgentError } from '../errors.js';
import type { ByteRange, HolePuncher, WriteOp } from './write-ops.js';
import { allocateShared, copyIntoShared } from './shared-memory.js';
import { BufferPool, POOL_BUFFER_BYTES, offeredPoolBuffers } from './buffer-pool.js';

/** Zero detection granularity: 64 KiB blocks, aligned to the device. */
export const ZERO_BLOCK = 64 * 1024;
const ZEROS = Buffer.alloc(ZERO_BLOCK);
/** Largest single write. */
export const MAX_WRITE = POOL_BUFFER_BYTES;
/** Offsets, lengths and memory for direct I/O are kept 4 KiB-aligned (covers 512e and 4Kn disks). */
export const DIRECT_ALIGN = 4096;
/**
 * Writes in flight by default: 3 were as fast as 4 on the bench, and one 4 MiB pool buffer less
 * keeps the agent's peak RSS under 150 MiB.
 */
const DEFAULT_PARALLELISM = 3;
/** Written (never modified) for zero ranges on devices that were not zeroed out beforehand. */
const ZERO_WRITE = Buffer.alloc(MAX_WRITE);

/**
 * Allocates `size` bytes whose address suits O_DIRECT on `fd`, or null when none can be found.
 * Shared memory, like allocateShared.
 */
export function allocateAligned(fd: number, size: number): Buffer | null {
  const raw = allocateShared(size + DIRECT_ALIGN);
  for (let k = 0; k < DIRECT_ALIGN; k += 8) {
    try {
      readSync(fd, raw, k, DIRECT_ALIGN, 0);
      return raw.subarray(k, k + size);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') return null;
    }
  }
  return null;
}

export interface WriterOptions {
  deviceName: string;
  deviceSize: number;
  /** True when everything from 0 to deviceSize reads back as zeros (zeroed out before writing). */
  preZeroed: boolean;
  /** Writes in flight at once (DEFAULT_PARALLELISM). */
  parallelism?: number;
  /** The same device opened with O_DIRECT, when that worked. */
  direct?: FileHandle | null;
  /**
   * Where a discarded range reads back zeros (a loop device's punched hole): the image's zero runs
   * are discarded as they pass instead of written; what the device refuses is written as zeros.
   * The writer closes it.
   */
  discard?: HolePuncher | null;
  /**
   * Set while the device is still being prepared (wiped, zeroed out): nothing touches it before
   * this settles with how the device takes zeros, which then replaces preZeroed and discard.
   * Meanwhile the download and its hash go on: all-zero pool buffers are kept as ranges (their
   * memory goes back at once), other pool buffers are held until the pool runs out.
   */
  prepared?: Promise<DeviceZeroing>;
}

/** How a device takes the image's zero ranges (see WriterOptions). */
export interface DeviceZeroing {
  preZeroed: boolean;
  discard: HolePuncher | null;
}

/** Zero runs shorter than this are written: a discard costs a subprocess. */
export const MIN_DISCARD = 1024 * 1024;

/** True when `block` (at most ZERO_BLOCK bytes) is all zeros. */
function zeroBlock(block: Buffer): boolean {
  return block.equals(block.length === ZERO_BLOCK ? ZEROS : ZEROS.subarray(0, block.length));
}

/** True when every byte of `data` is zero. */
function allZero(data: Buffer): boolean {
  for (let pos = 0; pos < data.length; pos += ZERO_BLOCK) if (!zeroBlock(data.subarray(pos, pos + ZERO_BLOCK))) return false;
  return true;
}

/** True when `r` and [offset, offset+length) share a byte. */
function overlaps(r: ByteRange, offset: number, length: number): boolean {
  return offset < r.offset + r.length && r.offset < offset + length;
}

export class DeviceWriter {
  bytesWritten = 0;
  bytesSkipped = 0;
  /** Bytes that went around the page cache. */
  bytesDirect = 0;
  /** Highest offset written or declared, i.e. how far the image reaches. */
  extent = 0;
  /** Buffers for readers that copy their data anyway (the raw stream); aligned when direct I/O works. */
  readonly pool: BufferPool;
  private zeroBuffer: Buffer | null = null;
  /** Writes in flight, with the range each covers. */
  private readonly inflight = new Map<Promise<void>, ByteRange>();
  /** A zero run waiting to be discarded (grows while the next zero blocks continue it). */
  private pendingZero: ByteRange | null = null;
  /** Zero runs handed to the hole puncher, until the writer has seen whether the device took them. */
  private readonly discards: Array<{ run: ByteRange; taken: Promise<boolean> }> = [];
  private failure: unknown = null;
  /** Ops that arrived while the device was being prepared, in order; null once they are applied. */
  private early: WriteOp[] | null = null;
  /** Settles once the device is prepared and the early ops are applied. */
  private readonly earlyApplied: Promise<void> = Promise.resolve();
  /** The device is prepared: ops are no longer held. */
  private ready = true;
  /** The write was given up (drain()): held ops are dropped, not written. */
  private abandoned = false;

  constructor(
    private readonly fh: FileHandle,
    private o: WriterOptions,
  ) {
    const direct = o.direct ?? null;
    const allocate = direct ? () => allocateAligned(direct.fd, MAX_WRITE) : () => null;
    // In flight, plus one being filled and one staged: the pool bounds memory and keeps the device busy.
    this.pool = new BufferPool((o.parallelism ?? DEFAULT_PARALLELISM) + 2, allocate);
    if (direct && !this.pool.aligned) this.o = { ...o, direct: null };
    if (o.prepared) {
      this.ready = false;
      this.early = [];
      this.earlyApplied = o.prepared.then(async (zeroing) => {
        this.o = { ...this.o, ...zeroing };
        this.ready = true;
        for (const op of this.early ?? []) {
          if (this.abandoned) break;
          await this.applyNow(op);
        }
        this.early = null;
      });
      // Surfaces through apply(), finish() or drain().
      this.earlyApplied.catch(() => undefined);
    }
  }

  /**
   * Keeps `op` for when the device is prepared, if that costs no memory beyond a pool buffer:
   * zeros become a range (their buffer goes back at once), pool data is held. False: apply() waits.
   */
  private heldEarly(op: WriteOp): boolean {
    if (this.ready || !this.early) return false;
    switch (op.kind) {
      case 'size':
        if (op.virtualSize > this.o.deviceSize) throw this.tooBig(op.virtualSize);
        return true;
      case 'zero':
        if (op.offset + op.length > this.o.deviceSize) throw this.tooBig(op.offset + op.length);
        this.early.push(op);
        return true;
      case 'data':
        if (op.pooled !== true) return false;
        if (op.offset + op.data.length > this.o.deviceSize) throw this.tooBig(op.offset + op.data.length);
        if (allZero(op.data)) {
          this.early.push({ kind: 'zero', offset: op.offset, length: op.data.length });
          op.release?.();
        } else {
          this.early.push(op);
        }
        return true;
    }
  }

  /** True when a pool buffer (or a block-aligned part of one) may be written directly at `position`. */
  private directOk(buf: Buffer, position: number, poolBuffer: boolean): boolean {
    return !!this.o.direct && poolBuffer && position % DIRECT_ALIGN === 0 && buf.length % DIRECT_ALIGN === 0;
  }

  private tooBig(end: number): AgentError {
    return new AgentError(
      'ImageWriteError',
      `Writing image to device ${this.o.deviceName} failed: the image needs ${end} bytes but the device has ${this.o.deviceSize}`,
    );
  }

  async apply(op: WriteOp): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.early) {
      if (this.heldEarly(op)) return;
      await this.earlyApplied;
    }
    return this.applyNow(op);
  }

  private async applyNow(op: WriteOp): Promise<void> {
    if (this.failure) throw this.failure;
    if (op.kind !== 'data') await this.flushStage();
    switch (op.kind) {
      case 'size':
        if (op.virtualSize > this.o.deviceSize) throw this.tooBig(op.virtualSize);
        return;
      case 'zero':
        if (op.offset + op.length > this.o.deviceSize) throw this.tooBig(op.offset + op.length);
        this.extent = Math.max(this.extent, op.offset + op.length);
        await this.zeroRange(op.offset, op.length);
        return;
      case 'data': {
        if (op.offset + op.data.length > this.o.deviceSize) throw this.tooBig(op.offset + op.data.length);
        this.extent = Math.max(this.extent, op.offset + op.data.length);
        if (this.pendingZero || this.discards.length > 0) await this.afterDiscardsOf(op.offset, op.data.length);
        // Other readers' data (qcow2 clusters, still in network buffers) is gathered into pool buffers
        // when that lets it go around the page cache in big writes; the network buffer is free at once.
        if (op.pooled !== true && this.stagingPossible(op.offset, op.data.length)) {
          await this.stage(op.offset, op.data);
          op.release?.();
          return;
        }
        await this.flushStage();
        const pooled = op.pooled === true;
        const writes: Promise<void>[] = [];
        if (!this.skipsZeros) writes.push((await this.submit(op.data, op.offset, pooled)).done);
        else await this.writeSkippingZeros(op.data, op.offset, pooled, writes);
        if (op.release) void Promise.allSettled(writes).then(op.release);
        if (op.transient) await Promise.allSettled(writes);
        return;
      }
    }
  }

  private staged: { buf: Buffer; start: number; fill: number } | null = null;

  /** True when adjacent small data ops are gathered into aligned pool buffers (no need to join them first). */
  get gathers(): boolean {
    return this.pool.aligned && !!this.o.direct;
  }

  /**
   * Data that continues the staged run, or starts an aligned one, is gathered: pieces of any size
   * (network chunks cut at cluster boundaries) fill MAX_WRITE buffers that go out aligned.
   */
  private stagingPossible(offset: number, length: number): boolean {
    if (!this.gathers || length > MAX_WRITE) return false;
    const s = this.staged;
    return (s !== null && offset === s.start + s.fill) || offset % DIRECT_ALIGN === 0;
  }

  /** Copies `data` into the staging buffer, starting a new one unless it continues the current one. */
  private async stage(offset: number, data: Buffer): Promise<void> {
    if (this.staged && offset !== this.staged.start + this.staged.fill) await this.flushStage();
    let off = 0;
    while (off < data.length) {
      this.staged ??= { buf: await this.pool.acquire(), start: offset + off, fill: 0 };
      const st = this.staged;
      const n = copyIntoShared(data, st.buf, st.fill, off, Math.min(data.length, off + MAX_WRITE - st.fill));
      st.fill += n;
      off += n;
      if (st.fill === MAX_WRITE) await this.flushStage();
    }
  }

  private async flushStage(): Promise<void> {
    const st = this.staged;
    if (!st) return;
    this.staged = null;
    const data = st.buf.subarray(0, st.fill);
    const writes: Promise<void>[] = [];
    if (!this.skipsZeros) writes.push((await this.submit(data, st.start, true)).done);
    else await this.writeSkippingZeros(data, st.start, true, writes);
    void Promise.allSettled(writes).then(() => this.pool.release(st.buf));
  }

  /** True when all-zero blocks of data need not be written as they are. */
  private get skipsZeros(): boolean {
    return this.o.preZeroed || !!this.o.discard;
  }

  /** A range that must read back zeros: skipped, queued for a discard, or written. */
  private async zeroRange(offset: number, length: number): Promise<void> {
    if (this.o.preZeroed) {
      this.bytesSkipped += length;
      return;
    }
    if (this.o.discard) {
      const p = this.pendingZero;
      if (p && p.offset + p.length === offset) {
        p.length += length;
        return;
      }
      await this.flushZero();
      this.pendingZero = { offset, length };
      return;
    }
    await this.writeZeros(offset, length);
  }

  /** Ends the pending zero run: handed to the hole puncher when long enough, else written. */
  private async flushZero(): Promise<void> {
    const run = this.pendingZero;
    if (!run) return;
    this.pendingZero = null;
    if (run.length < MIN_DISCARD || !this.o.discard) return this.writeZeros(run.offset, run.length);
    // A write still in flight into the run (data the image then declared zero) must land first.
    await Promise.all([...this.inflight].filter(([, r]) => overlaps(r, run.offset, run.length)).map(([p]) => p));
    this.discards.push({ run, taken: this.o.discard.discard(run).catch(() => false) });
  }

  /** Waits for the discards of `runs`; what the device refused is written as zeros. */
  private async settleDiscards(runs: Array<{ run: ByteRange; taken: Promise<boolean> }>): Promise<void> {
    for (const d of runs) {
      this.discards.splice(this.discards.indexOf(d), 1);
      if (await d.taken) this.bytesSkipped += d.run.length;
      else await this.writeZeros(d.run.offset, d.run.length);
    }
  }

  /** Data for a range a zero run covers (qcow2 may revisit a range): that run's hole comes first. */
  private async afterDiscardsOf(offset: number, length: number): Promise<void> {
    const z = this.pendingZero;
    if (z && overlaps(z, offset, length)) await this.flushZero();
    const hit = this.discards.filter((d) => overlaps(d.run, offset, length));
    if (hit.length === 0) return;
    await this.settleDiscards(hit);
    await Promise.all(this.inflight.keys());
  }

  private async writeZeros(offset: number, length: number): Promise<void> {
    for (let off = offset; off < offset + length; ) {
      const n = Math.min(MAX_WRITE, offset + length - off);
      // An aligned zero buffer is made on first use: most images bring no zero ranges.
      this.zeroBuffer ??= (this.o.direct && allocateAligned(this.o.direct.fd, MAX_WRITE)?.fill(0)) || ZERO_WRITE;
      await this.submit(this.zeroBuffer.subarray(0, n), off, this.zeroBuffer !== ZERO_WRITE);
      off += n;
    }
  }

  /** Writes the non-zero runs of `data`, checked in ZERO_BLOCK-aligned blocks. */
  private async writeSkippingZeros(data: Buffer, offset: number, pooled: boolean, writes: Promise<void>[]): Promise<void> {
    let runStart = -1;
    let pos = 0;
    while (pos < data.length) {
      // Block boundaries follow device offsets, so skipped ranges stay aligned.
      const next = Math.min(data.length, pos + ZERO_BLOCK - ((offset + pos) % ZERO_BLOCK));
      const block = data.subarray(pos, next);
      if (zeroBlock(block)) {
        if (runStart >= 0) {
          writes.push((await this.submit(data.subarray(runStart, pos), offset + runStart, pooled)).done);
          runStart = -1;
        }
        await this.zeroRange(offset + pos, block.length);
      } else if (runStart < 0) {
        runStart = pos;
      }
      pos = next;
    }
    if (runStart >= 0) writes.push((await this.submit(data.subarray(runStart), offset + runStart, pooled)).done);
  }

  /** Starts a write once fewer than `parallelism` are in flight; `done` settles when it completes. */
  private async submit(buf: Buffer, position: number, pooled: boolean): Promise<{ done: Promise<void> }> {
    while (this.inflight.size >= (this.o.parallelism ?? DEFAULT_PARALLELISM)) await Promise.race(this.inflight.keys());
    if (this.failure) throw this.failure;
    const direct = this.directOk(buf, position, pooled);
    const handle = direct ? this.o.direct! : this.fh;
    const p: Promise<void> = this.writeFully(handle, buf, position).then(
      () => {
        this.bytesWritten += buf.length;
        if (direct) this.bytesDirect += buf.length;
        this.inflight.delete(p);
      },
      (err: unknown) => {
        this.failure ??= new AgentError(
          'ImageWriteError',
          `Writing image to device ${this.o.deviceName} failed at offset ${position}: ${(err as Error).message}`,
        );
        this.inflight.delete(p);
      },
    );
    this.inflight.set(p, { offset: position, length: buf.length });
    return { done: p };
  }

  private async writeFully(handle: FileHandle, buf: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await handle.write(buf, done, buf.length - done, position + done);
      if (bytesWritten <= 0) throw new Error('short write');
      done += bytesWritten;
    }
  }

  /** Waits for every write and flushes the device (the page cache, and the disk's own cache). */
  async finish(): Promise<void> {
    await this.earlyApplied;
    await this.flushStage();
    await this.flushZero();
    await this.settleDiscards([...this.discards]);
    await this.o.discard?.close();
    await Promise.all(this.inflight.keys());
    if (this.failure) throw this.failure;
    await this.fh.sync();
    if (this.o.direct) await this.o.direct.sync();
  }

  /** Waits for in-flight writes and discards without throwing (cleanup after a failure). */
  async drain(): Promise<void> {
    this.abandoned = true;
    // The device's preparation is not left running behind the caller (which wipes the disk next).
    await this.earlyApplied.catch(() => undefined);
    await Promise.allSettled([...this.inflight.keys(), this.o.discard?.close()]);
  }
}

/** Re-chunks a byte stream into positioned DataOps of MAX_WRITE bytes (the raw image format). */
export async function* rawOps(source: AsyncIterable<Buffer>, pool: BufferPool): AsyncGenerator<WriteOp> {
  let offset = 0;
  let buf: Buffer | null = null;
  let fill = 0;
  const emit = (b: Buffer, n: number): WriteOp => {
    const op: WriteOp = { kind: 'data', offset, data: b.subarray(0, n), pooled: pool.aligned, release: () => pool.release(b) };
    offset += n;
    return op;
  };
  for await (const chunk of source) {
    // A whole pool buffer offered by the producer (the zstd worker's output) is taken as it is.
    const take = fill === 0 ? offeredPoolBuffers.get(chunk) : undefined;
    if (take) {
      const whole = take();
      yield { kind: 'data', offset, data: chunk, pooled: pool.aligned, release: () => pool.release(whole) };
      offset += chunk.length;
      continue;
    }
    let off = 0;
    while (off < chunk.length) {
      buf ??= await pool.acquire();
      const n = copyIntoShared(chunk, buf, fill, off, Math.min(chunk.length, off + MAX_WRITE - fill));
      fill += n;
      off += n;
      if (fill === MAX_WRITE) {
        yield emit(buf, fill);
        buf = null;
        fill = 0;
      }
    }
  }
  if (buf && fill > 0) yield emit(buf, fill);
}
