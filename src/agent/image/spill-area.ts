// A SpillArea over a region of an open file: on a deploy, the target block device beyond the
// image's virtual size, so data a streaming reader cannot place yet never sits in RAM or tmpfs.
import type { FileHandle } from 'node:fs/promises';
import type { SpillArea } from './write-ops.js';

/** Thrown by `write` when the region has no room left for the data. */
export class SpillAreaFullError extends Error {
  override readonly name = 'SpillAreaFullError';
  constructor(
    readonly needed: number,
    readonly capacity: number,
  ) {
    super(`spill area full: ${needed} bytes needed, capacity is ${capacity} bytes`);
  }
}

/**
 * Stores data sequentially in `[start, start + capacity)` of `handle` with positioned writes; it
 * never touches bytes outside that region. `write` returns positions relative to the region, to
 * pass to `read`. Writes may be issued concurrently: room is reserved before the I/O starts.
 * Space is never reclaimed (a reader spills at most the image's size once).
 */
export class FileSpillArea implements SpillArea {
  private usedBytes = 0;

  constructor(
    private readonly handle: FileHandle,
    readonly start: number,
    readonly capacity: number,
  ) {
    if (!Number.isSafeInteger(start) || start < 0) throw new RangeError(`invalid spill area start ${start}`);
    if (!Number.isSafeInteger(capacity) || capacity < 0) throw new RangeError(`invalid spill area capacity ${capacity}`);
  }

  get used(): number {
    return this.usedBytes;
  }

  async write(data: Buffer): Promise<number> {
    const at = this.usedBytes;
    if (at + data.length > this.capacity) throw new SpillAreaFullError(at + data.length, this.capacity);
    this.usedBytes = at + data.length;
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, this.start + at + done);
      if (bytesWritten <= 0) throw new Error(`spill area: short write at ${this.start + at + done}`);
      done += bytesWritten;
    }
    return at;
  }

  async read(position: number, length: number): Promise<Buffer> {
    if (position < 0 || length < 0 || position + length > this.usedBytes) {
      throw new RangeError(`spill area: read of ${length} bytes at ${position} is outside the ${this.usedBytes} bytes stored`);
    }
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(buf, done, length - done, this.start + position + done);
      if (bytesRead <= 0) throw new Error(`spill area: short read at ${this.start + position + done}`);
      done += bytesRead;
    }
    return buf;
  }
}
