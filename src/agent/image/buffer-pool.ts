// The few big buffers an image write reuses from start to end, and how a producer hands one of them
// to its consumer without a copy.
import { allocateShared } from './shared-memory.js';

/** Size of every pool buffer: the device writer's largest single write. */
export const POOL_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * Chunks of a stream that lie in a pool buffer their producer offers to the consumer: a consumer
 * that calls the function owns that buffer from then on (it gets it, to release it to the pool);
 * otherwise the producer reuses it once the next chunk is asked for.
 */
export const offeredPoolBuffers = new WeakMap<Buffer, () => Buffer>();

/**
 * A few POOL_BUFFER_BYTES buffers reused for the whole write: the download is read into them (or
 * copied, or decompressed), and the writer releases each when its write is done. No allocation per
 * 4 MiB (fresh buffers cost page faults and GC), and the pool size bounds the memory in flight.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly waiters: Array<(b: Buffer) => void> = [];
  /** True when every buffer is aligned for direct I/O. */
  readonly aligned: boolean;

  constructor(count: number, allocate: () => Buffer | null = () => null) {
    let aligned = true;
    for (let i = 0; i < count; i++) {
      const b = allocate();
      if (!b) aligned = false;
      this.free.push(b ?? allocateShared(POOL_BUFFER_BYTES));
    }
    this.aligned = aligned && count > 0;
  }

  /** Buffers free right now. */
  get available(): number {
    return this.free.length;
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
