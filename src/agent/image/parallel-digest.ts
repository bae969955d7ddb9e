// Hashing on a worker thread. SHA-256 at ~1.3 GB/s is the biggest single cost of an image write on
// the main thread; here the main thread only copies each chunk into one of a few shared 4 MiB
// slots, and a worker hashes the slots in order on another core. A full set of busy slots makes
// update() wait: that is the back-pressure that keeps memory bounded when hashing is the bottleneck.
// Bytes that already sit in shared memory (the device writer's buffers, for raw images) are hashed
// where they are with updateShared(): no copy at all.
import { createHash } from 'node:crypto';
import type { Worker } from 'node:worker_threads';
import { startPipelineWorker } from './pipeline-worker.js';
import { copyIntoShared } from './shared-memory.js';
import { ZSTD_WORKER_SOURCE } from './zstd-worker-source.js';

export interface StreamDigest {
  /** Adds bytes; returns a promise only when the caller must wait for a free slot. */
  update(chunk: Buffer): void | Promise<void>;
  /**
   * Adds the bytes of a buffer in shared memory without copying them; resolves once they are
   * hashed (the caller must not change them before). Ordered with update().
   */
  updateShared(view: Buffer): Promise<void>;
  /** Hex digest of everything added. */
  digest(): Promise<string>;
  /** Ends the hashing thread of a digest that will not be finished (a failed or abandoned write). */
  close(): void;
  /** The hashing thread, which also hosts a zstd decompressor (zstd-worker.ts); null when inline. */
  readonly thread: Worker | null;
}

// Slots are made on first use: a raw image's bytes are hashed in the writer's buffers instead, and
// the 6 MiB would only add to the agent's peak memory.
const SLOT_BYTES = 2 * 1024 * 1024;
const SLOTS = 3;
const COPY_BEFORE_SLOTS = 1024 * 1024;

// CommonJS source for `new Worker(…, { eval: true })`: no separate file to ship or resolve.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hash = createHash(workerData.algorithm);
let slots = [];
parentPort.on('message', (m) => {
  if (m.z) return; // for the zstd decompressor that shares this thread
  if (m.slots) {
    slots = m.slots.map((sab) => new Uint8Array(sab));
    return;
  }
  if (m.done) {
    parentPort.postMessage({ digest: hash.digest('hex') });
    return;
  }
  if (m.bytes) {
    hash.update(m.bytes);
    return;
  }
  if (m.shared) {
    hash.update(new Uint8Array(m.shared, m.offset, m.length));
    parentPort.postMessage({ sharedDone: m.id });
    return;
  }
  hash.update(slots[m.slot].subarray(0, m.length));
  parentPort.postMessage({ slot: m.slot });
});
`;

class WorkerDigest implements StreamDigest {
  private readonly worker: Worker;
  get thread(): Worker {
    return this.worker;
  }
  private slots: Buffer[] = [];
  private free: number[] = [];
  private waiters: Array<() => void> = [];
  private current = -1;
  private copied = 0;
  private fill = 0;
  private result: ((hex: string) => void) | null = null;
  private failure: Error | null = null;
  private sharedId = 0;
  private readonly sharedPending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();

  constructor(algorithm: string) {
    // The zstd decompressor shares this thread: one worker's memory, not two.
    this.worker = startPipelineWorker(WORKER_SOURCE + ZSTD_WORKER_SOURCE, { algorithm });
    this.worker.unref();
    this.worker.on('message', (m: { slot?: number; digest?: string; sharedDone?: number; z?: true }) => {
      if (m.z) return; // the zstd decompressor's
      if (m.sharedDone !== undefined) {
        this.sharedPending.get(m.sharedDone)?.resolve();
        this.sharedPending.delete(m.sharedDone);
        return;
      }
      if (m.digest !== undefined) {
        this.result?.(m.digest);
        void this.worker.terminate();
        return;
      }
      this.free.push(m.slot!);
      this.waiters.shift()?.();
    });
    this.worker.on('error', (err) => {
      this.failure = err;
      for (const w of this.waiters.splice(0)) w();
      for (const p of this.sharedPending.values()) p.reject(err);
      this.sharedPending.clear();
    });
  }

  private post(): void {
    if (this.current < 0) return;
    this.worker.postMessage({ slot: this.current, length: this.fill });
    this.current = -1;
    this.fill = 0;
  }

  private makeSlots(): void {
    const sabs = Array.from({ length: SLOTS }, () => new SharedArrayBuffer(SLOT_BYTES));
    this.slots = sabs.map((sab) => Buffer.from(sab));
    this.free = sabs.map((_, i) => i);
    this.worker.postMessage({ slots: sabs });
  }

  private async acquire(): Promise<void> {
    if (this.slots.length === 0) this.makeSlots();
    while (this.free.length === 0 && !this.failure) await new Promise<void>((resolve) => this.waiters.push(resolve));
    if (this.failure) throw this.failure;
    this.current = this.free.shift()!;
  }

  update(chunk: Buffer): void | Promise<void> {
    if (this.failure) throw this.failure;
    // The first bytes travel in the message itself: for a raw image that is all that ever passes
    // here, and no slot is made.
    if (this.slots.length === 0 && this.copied + chunk.length <= COPY_BEFORE_SLOTS) {
      this.copied += chunk.length;
      this.worker.postMessage({ bytes: new Uint8Array(chunk) });
      return;
    }
    let off = 0;
    // Fast path: the chunk fits in the slot being filled (the common case, chunks are ~64 KiB).
    if (this.current >= 0 && chunk.length <= SLOT_BYTES - this.fill) {
      copyIntoShared(chunk, this.slots[this.current]!, this.fill);
      this.fill += chunk.length;
      if (this.fill === SLOT_BYTES) this.post();
      return;
    }
    return (async () => {
      while (off < chunk.length) {
        if (this.current < 0) await this.acquire();
        const n = Math.min(chunk.length - off, SLOT_BYTES - this.fill);
        copyIntoShared(chunk, this.slots[this.current]!, this.fill, off, off + n);
        this.fill += n;
        off += n;
        if (this.fill === SLOT_BYTES) this.post();
      }
    })();
  }

  updateShared(view: Buffer): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (!(view.buffer instanceof SharedArrayBuffer)) {
      // Not shared memory: copy it through the slots (still in order).
      const wait = this.update(view);
      return wait ?? Promise.resolve();
    }
    this.post(); // bytes already in a slot go first
    const id = ++this.sharedId;
    return new Promise<void>((resolve, reject) => {
      this.sharedPending.set(id, { resolve, reject });
      this.worker.postMessage({ shared: view.buffer, offset: view.byteOffset, length: view.length, id });
    });
  }

  digest(): Promise<string> {
    if (this.failure) return Promise.reject(this.failure);
    this.post();
    return new Promise<string>((resolve, reject) => {
      this.result = resolve;
      this.worker.once('error', reject);
      this.worker.postMessage({ done: true });
    });
  }

  close(): void {
    void this.worker.terminate().catch(() => undefined);
  }
}

class InlineDigest implements StreamDigest {
  readonly thread = null;
  private readonly hash;
  constructor(algorithm: string) {
    this.hash = createHash(algorithm);
  }
  update(chunk: Buffer): void {
    this.hash.update(chunk);
  }
  async updateShared(view: Buffer): Promise<void> {
    this.hash.update(view);
  }
  async digest(): Promise<string> {
    return this.hash.digest('hex');
  }
  close(): void {}
}

/** A digest computed off the main thread; on the main thread if no worker can be started. */
export function parallelDigest(algorithm: string): StreamDigest {
  createHash(algorithm); // throws now for an unknown algorithm, not later in the worker
  try {
    return new WorkerDigest(algorithm);
  } catch {
    return new InlineDigest(algorithm);
  }
}

export function inlineDigest(algorithm: string): StreamDigest {
  return new InlineDigest(algorithm);
}
