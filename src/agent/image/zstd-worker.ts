// zstd decompression on a worker thread, driven synchronously there. Node's zlib zstd streams run
// each chunk through libuv's thread pool and allocate a fresh output buffer per chunk: on a 2 GiB
// image that took 11–16 s, most of it garbage collection and thread hand-offs, and the `zstd -dc`
// subprocess 6–7 s. Here one worker calls the native decompressor's synchronous write on 512 KiB
// input slots and decompresses straight into the device writer's 4 MiB pool buffers, all shared
// memory: no allocation per chunk, one hand-off per slot, and no copy of the output (3.4–4.3 s).
// The compressed bytes are hashed where they lie in the input slots, by the same thread: the
// decompressor lives in the hash worker (zstd-worker-source.ts), so its memory is not paid twice.
//
// That uses the zlib handle's writeSync (what zlib's own *Sync functions use); where a Node.js has
// no such handle the caller keeps the `zstd -dc` subprocess.
import type { Worker } from 'node:worker_threads';
import * as zlib from 'node:zlib';
import { AgentError } from '../errors.js';
import { offeredPoolBuffers, type BufferPool } from './buffer-pool.js';
import type { StreamDigest } from './parallel-digest.js';
import { startPipelineWorker } from './pipeline-worker.js';
import { ZSTD_WORKER_SOURCE } from './zstd-worker-source.js';
import { copyIntoShared } from './shared-memory.js';

const IN_SLOT = 512 * 1024;
const IN_SLOTS = 3;
/** Pool buffers the worker may be filling at once. */
const OUT_AHEAD = 2;

interface NativeHandle {
  writeSync: (...args: unknown[]) => void;
}

/** True when this Node.js has zlib zstd with the synchronous handle the worker drives. */
export function zstdWorkerAvailable(): boolean {
  const z = zlib as unknown as { createZstdDecompress?: () => { _handle?: NativeHandle; _writeState?: unknown; close: () => void } };
  if (typeof z.createZstdDecompress !== 'function') return false;
  const d = z.createZstdDecompress();
  const ok = typeof d._handle?.writeSync === 'function' && d._writeState instanceof Uint32Array;
  d.close();
  return ok;
}

type Message = { z?: true; stopped?: true; slotFree?: number; out?: number; length?: number; done?: true; error?: { message: string; code: string } };

function zstdError(detail: string): AgentError {
  return new AgentError('ImageWriteError', `Writing image to device failed: zstd decompression failed: ${detail}`);
}

export interface ZstdWorkerOptions {
  /** Where the output goes: buffers of the device writer's pool. */
  pool: BufferPool;
  /**
   * Hashing of the compressed bytes, done on them in the input slots: `handOver()` stops the
   * caller's hashing and says how many bytes of the stream it has hashed already.
   */
  hash?: { digest: StreamDigest; handOver: () => number } | null;
}

/**
 * Decompresses a zstd stream on a worker thread into pool buffers. Each chunk lies in a pool buffer
 * offered to the consumer (offeredPoolBuffers): valid until the next chunk is asked for, unless taken.
 */
export async function* zstdInWorker(source: AsyncIterable<Buffer>, o: ZstdWorkerOptions): AsyncGenerator<Buffer> {
  // The hash worker's thread when there is one (its memory is paid already), else one of its own.
  const own = !o.hash?.digest.thread;
  const worker: Worker = o.hash?.digest.thread ?? startPipelineWorker(ZSTD_WORKER_SOURCE);
  const post = (m: object) => worker.postMessage({ z: true, ...m });
  const slotSabs = Array.from({ length: IN_SLOTS }, () => new SharedArrayBuffer(IN_SLOT));
  const slots = slotSabs.map((sab) => Buffer.from(sab));
  post({ start: true, slots: slotSabs });

  const freeSlots = slots.map((_, i) => i);
  let slotWaiter: (() => void) | null = null;
  /** Pool buffers at the worker, by id. */
  const atWorker = new Map<number, Buffer>();
  let nextId = 0;
  const ready: Array<{ buf: Buffer; length: number }> = [];
  let finished = false;
  let failure: unknown = null;
  let wake: (() => void) | null = null;
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  const wakeFeeder = () => {
    const w = slotWaiter;
    slotWaiter = null;
    w?.();
  };
  const fail = (err: unknown) => {
    failure ??= err;
    notify();
    wakeFeeder();
  };
  /** Slot i is free once the worker has decompressed it and its bytes are hashed. */
  const hashing: Array<Promise<void> | null> = slots.map(() => null);
  let onStopped: (() => void) | null = null;
  const onMessage = (m: Message) => {
    if (!m.z) return; // the hash worker's own
    if (m.stopped) {
      onStopped?.();
    } else if (m.slotFree !== undefined) {
      const slot = m.slotFree;
      const free = () => {
        freeSlots.push(slot);
        wakeFeeder();
      };
      const h = hashing[slot];
      if (h) void h.then(free, fail);
      else free();
    } else if (m.out !== undefined) {
      ready.push({ buf: atWorker.get(m.out)!, length: m.length! });
      atWorker.delete(m.out);
      void supply();
      notify();
    } else if (m.done) {
      finished = true;
      notify();
    } else if (m.error) {
      fail(zstdError(m.error.message));
    }
  };
  const onError = (err: Error) => fail(zstdError(err.message));
  worker.on('message', onMessage);
  worker.on('error', onError);

  let stopped = false;
  // Keeps OUT_AHEAD pool buffers at the worker; waits for the pool on its own, not in the consumer.
  let supplying = false;
  const supply = async () => {
    if (supplying) return;
    supplying = true;
    try {
      while (!stopped && !failure && !finished && atWorker.size < OUT_AHEAD) {
        const buf = await o.pool.acquire();
        if (stopped || failure || finished) {
          o.pool.release(buf);
          return;
        }
        const id = nextId++;
        atWorker.set(id, buf);
        post({ out: id, sab: buf.buffer, offset: buf.byteOffset, length: buf.length });
      }
    } finally {
      supplying = false;
    }
  };

  // The caller's hashing stops here; bytes of the stream before `hashedBefore` are hashed already.
  const hashedBefore = o.hash ? o.hash.handOver() : 0;
  let streamPos = 0;
  const feed = async () => {
    let slot = -1;
    let fill = 0;
    const postSlot = () => {
      const start = streamPos;
      streamPos += fill;
      if (o.hash && streamPos > hashedBefore) {
        const from = Math.max(0, hashedBefore - start);
        hashing[slot] = o.hash.digest.updateShared(slots[slot]!.subarray(from, fill));
      } else {
        hashing[slot] = null;
      }
      post({ slot, length: fill });
      slot = -1;
      fill = 0;
    };
    for await (const chunk of source) {
      let off = 0;
      while (off < chunk.length) {
        if (stopped || failure) return;
        if (slot < 0) {
          while (freeSlots.length === 0 && !failure && !stopped) await new Promise<void>((r) => (slotWaiter = r));
          if (failure || stopped) return;
          slot = freeSlots.shift()!;
        }
        const n = copyIntoShared(chunk, slots[slot]!, fill, off);
        fill += n;
        off += n;
        if (fill === IN_SLOT) postSlot();
      }
    }
    if (slot >= 0) postSlot();
    post({ end: true });
  };
  const feeding = feed().catch(fail);

  let completed = false;
  try {
    void supply();
    for (;;) {
      while (ready.length === 0 && !finished && !failure) await new Promise<void>((r) => (wake = r));
      if (failure) throw failure;
      const next = ready.shift();
      if (!next) break; // finished, and everything yielded
      let taken = false;
      const chunk = next.buf.subarray(0, next.length);
      offeredPoolBuffers.set(chunk, () => {
        taken = true;
        return next.buf;
      });
      try {
        yield chunk;
      } finally {
        // Also when the consumer stops here.
        if (!taken) o.pool.release(next.buf);
      }
    }
    await feeding;
    if (failure) throw failure;
    completed = true;
  } finally {
    stopped = true;
    wakeFeeder();
    // Stopped early (an error downstream): the feeder may wait on the download, which the caller
    // closes; it ends on its own then.
    if (completed) await feeding;
    // The buffers at the worker go back to the pool only once it cannot write to them any more.
    if (own) {
      await worker.terminate();
    } else {
      let stoppedOrExited!: () => void;
      const acknowledged = new Promise<void>((resolve) => (stoppedOrExited = resolve));
      onStopped = stoppedOrExited;
      worker.once('exit', stoppedOrExited);
      post({ stop: true });
      await acknowledged;
      worker.off('exit', stoppedOrExited);
    }
    worker.off('message', onMessage);
    worker.off('error', onError);
    for (const buf of atWorker.values()) o.pool.release(buf);
    for (const r of ready.splice(0)) o.pool.release(r.buf);
    atWorker.clear();
  }
}
