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
          await this.submit(Buffer.alloc(n), off);
          off += n;
        }
        return;
      case 'data':
        if (op.offset + op.data.length > this.o.deviceSize) throw this.tooBig(op.offset + op.data.length);
        this.extent = Math.max(this.extent, op.offset + op.data.length);
        if (!this.o.preZeroed) return this.submit(op.data, op.offset);
        return this.writeSkippingZeros(op.data, op.offset);
    }
  }

  /** Writes the non-zero runs of `data`, checked in ZERO_BLOCK-aligned blocks. */
  private async writeSkippingZeros(data: Buffer, offset: number): Promise<void> {
    let runStart = -1;
    let pos = 0;
    while (pos < data.length) {
      // Block boundaries follow device offsets, so skipped ranges stay aligned.
      const next = Math.min(data.length, pos + ZERO_BLOCK - ((offset + pos) % ZERO_BLOCK));
      const block = data.subarray(pos, next);
      const zero = block.length === ZERO_BLOCK ? block.equals(ZEROS) : block.equals(ZEROS.subarray(0, block.length));
      if (zero) {
        if (runStart >= 0) {
          await this.submit(data.subarray(runStart, pos), offset + runStart);
          runStart = -1;
        }
        this.bytesSkipped += block.length;
      } else if (runStart < 0) {
        runStart = pos;
      }
      pos = next;
    }
    if (runStart >= 0) await this.submit(data.subarray(runStart), offset + runStart);
  }

  private async submit(buf: Buffer, position: number): Promise<void> {
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

/** Re-chunks a byte stream into positioned DataOps of MAX_WRITE bytes (the raw image format). */
export async function* rawOps(source: AsyncIterable<Buffer>): AsyncGenerator<WriteOp> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let offset = 0;
  for await (const chunk of source) {
    pending.push(chunk);
    pendingBytes += chunk.length;
    if (pendingBytes >= MAX_WRITE) {
      const all = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      const whole = all.length - (all.length % MAX_WRITE);
      for (let i = 0; i < whole; i += MAX_WRITE) {
        yield { kind: 'data', offset, data: all.subarray(i, i + MAX_WRITE) };
        offset += MAX_WRITE;
      }
      pending = whole < all.length ? [all.subarray(whole)] : [];
      pendingBytes = all.length - whole;
    }
  }
  if (pendingBytes > 0) yield { kind: 'data', offset, data: pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes) };
}
