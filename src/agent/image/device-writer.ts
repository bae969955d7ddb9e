// Applies WriteOps to a block device: big aligned writes (a few in flight, on libuv's thread pool so
// the event loop stays free), all-zero blocks skipped when the device is known to read zeros
// there, explicit zeros otherwise, bounds checked against the device size, fsync at the end.
import type { FileHandle } from 'node:fs/promises';
import { AgentError } from '../errors.js';
import type { WriteOp } from './write-ops.js';

/** Zero detection granularity: 64 KiB blocks, aligned to the device. */
export const ZERO_BLOCK = 64 * 1024;
const ZEROS = Buffer.alloc(ZERO_BLOCK);
/** Largest single write. */
export const MAX_WRITE = 4 * 1024 * 1024;
/** Written (never modified) for zero ranges on devices that were not zeroed out beforehand. */
const ZERO_WRITE = Buffer.alloc(MAX_WRITE);

export interface WriterOptions {
  deviceName: string;
  deviceSize: number;
  /** True when everything from 0 to deviceSize reads back as zeros (zeroed out before writing). */
  preZeroed: boolean;
  /** Writes in flight at once. */
  parallelism?: number;
}

export class DeviceWriter {
  bytesWritten = 0;
  bytesSkipped = 0;
  /** Highest offset written or declared, i.e. how far the image reaches. */
  extent = 0;
  private readonly inflight = new Set<Promise<void>>();
  private failure: unknown = null;

  constructor(
    private readonly fh: FileHandle,
    private readonly o: WriterOptions,
  ) {}

  private tooBig(end: number): AgentError {
    return new AgentError(
      'ImageWriteError',
      `Writing image to device ${this.o.deviceName} failed: the image needs ${end} bytes but the device has ${this.o.deviceSize}`,
    );
  }

  async apply(op: WriteOp): Promise<void> {
    if (this.failure) throw this.failure;
    switch (op.kind) {
      case 'size':
        if (op.virtualSize > this.o.deviceSize) throw this.tooBig(op.virtualSize);
        return;
      case 'zero':
        if (op.offset + op.length > this.o.deviceSize) throw this.tooBig(op.offset + op.length);
        this.extent = Math.max(this.extent, op.offset + op.length);
        if (this.o.preZeroed) {
          this.bytesSkipped += op.length;
          return;
        }
        for (let off = op.offset; off < op.offset + op.length; ) {
          const n = Math.min(MAX_WRITE, op.offset + op.length - off);
          await this.submit(ZERO_WRITE.subarray(0, n), off);
          off += n;
        }
        return;
      case 'data': {
        if (op.offset + op.data.length > this.o.deviceSize) throw this.tooBig(op.offset + op.data.length);
        this.extent = Math.max(this.extent, op.offset + op.data.length);
        const writes: Promise<void>[] = [];
        if (!this.o.preZeroed) writes.push((await this.submit(op.data, op.offset)).done);
        else await this.writeSkippingZeros(op.data, op.offset, writes);
        if (op.release) void Promise.allSettled(writes).then(op.release);
        return;
      }
    }
  }

  /** Writes the non-zero runs of `data`, checked in ZERO_BLOCK-aligned blocks. */
  private async writeSkippingZeros(data: Buffer, offset: number, writes: Promise<void>[] = []): Promise<void> {
    let runStart = -1;
    let pos = 0;
    while (pos < data.length) {
      // Block boundaries follow device offsets, so skipped ranges stay aligned.
      const next = Math.min(data.length, pos + ZERO_BLOCK - ((offset + pos) % ZERO_BLOCK));
      const block = data.subarray(pos, next);
      const zero = block.length === ZERO_BLOCK ? block.equals(ZEROS) : block.equals(ZEROS.subarray(0, block.length));
      if (zero) {
        if (runStart >= 0) {
          writes.push((await this.submit(data.subarray(runStart, pos), offset + runStart)).done);
          runStart = -1;
        }
        this.bytesSkipped += block.length;
      } else if (runStart < 0) {
        runStart = pos;
      }
      pos = next;
    }
    if (runStart >= 0) writes.push((await this.submit(data.subarray(runStart), offset + runStart)).done);
  }

  /** Starts a write once fewer than `parallelism` are in flight; `done` settles when it completes. */
  private async submit(buf: Buffer, position: number): Promise<{ done: Promise<void> }> {
    while (this.inflight.size >= (this.o.parallelism ?? 4)) await Promise.race(this.inflight);
    if (this.failure) throw this.failure;
    const p: Promise<void> = this.writeFully(buf, position).then(
      () => {
        this.bytesWritten += buf.length;
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
    this.inflight.add(p);
    return { done: p };
  }

  private async writeFully(buf: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, done, buf.length - done, position + done);
      if (bytesWritten <= 0) throw new Error('short write');
      done += bytesWritten;
    }
  }

  /** Waits for every write and flushes the device. */
  async finish(): Promise<void> {
    await Promise.all(this.inflight);
    if (this.failure) throw this.failure;
    await this.fh.sync();
  }

  /** Waits for in-flight writes without throwing (cleanup after a failure). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
  }
}

/**
 * A few MAX_WRITE buffers reused for the raw stream: one copy from the network chunks into a
 * buffer the writer releases when its write is done. No allocation per 4 MiB (fresh buffers cost
 * page faults and GC), and the pool size bounds the memory in flight.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly waiters: Array<(b: Buffer) => void> = [];

  constructor(count: number, size = MAX_WRITE) {
    for (let i = 0; i < count; i++) this.free.push(Buffer.allocUnsafeSlow(size));
  }

  acquire(): Buffer | Promise<Buffer> {
    return this.free.pop() ?? new Promise<Buffer>((resolve) => this.waiters.push(resolve));
  }

  release(buf: Buffer): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(buf);
    else this.free.push(buf);
  }
}

/** Re-chunks a byte stream into positioned DataOps of MAX_WRITE bytes (the raw image format). */
export async function* rawOps(source: AsyncIterable<Buffer>, pool = new BufferPool(6)): AsyncGenerator<WriteOp> {
  let offset = 0;
  let buf: Buffer | null = null;
  let fill = 0;
  const emit = (b: Buffer, n: number): WriteOp => {
    const op: WriteOp = { kind: 'data', offset, data: b.subarray(0, n), release: () => pool.release(b) };
    offset += n;
    return op;
  };
  for await (const chunk of source) {
    let off = 0;
    while (off < chunk.length) {
      buf ??= await pool.acquire();
      const n = chunk.copy(buf, fill, off, Math.min(chunk.length, off + MAX_WRITE - fill));
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
