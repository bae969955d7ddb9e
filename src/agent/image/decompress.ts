// Container detection and on-the-fly decompression. gzip runs in node:zlib off the main thread; xz
// runs as an `xz -dc` subprocess fed through pipes with back-pressure (nothing is buffered beyond
// pipe sizes). zstd, where Node's zlib has it (Node 24, the ramdisk's), is decompressed on the hash
// worker straight into the device writer's buffers (zstd-worker.ts): 3.4–3.9 s for a 2 GiB image
// where the `zstd -dc` subprocess took 6–7 s and zlib's zstd stream 11–16 s (bench/image-write,
// raw.zst). Elsewhere (Node 20) the subprocess does it, and zlib's stream only without a zstd binary.
import * as zlib from 'node:zlib';
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { Readable, type Transform } from 'node:stream';
import { AgentError } from '../errors.js';
import type { BufferPool } from './buffer-pool.js';
import { zstdInWorker, zstdWorkerAvailable, type ZstdWorkerOptions } from './zstd-worker.js';

export type Compression = 'gzip' | 'xz' | 'zstd' | 'bzip2' | null;

export function detectCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (head.length >= 3 && head.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
  return null;
}

/** Reads until at least `n` bytes are available; returns them and an iterable that replays them first. */
export async function peek(source: AsyncIterable<Buffer>, n: number): Promise<{ head: Buffer; stream: AsyncGenerator<Buffer> }> {
  const it = source[Symbol.asyncIterator]();
  const taken: Buffer[] = [];
  let have = 0;
  let done = false;
  while (have < n) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    // A source's chunk may be reused once the next is asked for: one that is not the last taken is copied.
    taken.push(have + r.value.length < n ? Buffer.from(r.value) : r.value);
    have += r.value.length;
  }
  // One chunk (the usual case) is replayed as it is, and only the few bytes asked for are copied:
  // chunks can be 4 MiB pool buffers (zstd-worker.ts) that must reach the consumer themselves.
  const first = taken.length === 1 ? taken[0]! : Buffer.concat(taken);
  taken.length = 0;
  let replayed: Buffer | null = first;
  async function* replay(): AsyncGenerator<Buffer> {
    let finished = done;
    try {
      const chunk = replayed;
      replayed = null; // not kept for the whole stream
      if (chunk?.length) yield chunk;
      if (done) return;
      for (;;) {
        const r = await it.next();
        if (r.done) {
          finished = true;
          return;
        }
        yield r.value;
      }
    } finally {
      // A consumer that stops early (an error downstream, a probe) must close the source too, or
      // the download's connection (or a decompressor process) lingers until its stall watchdog.
      if (!finished) await it.return?.();
    }
  }
  return { head: Buffer.from(first.subarray(0, Math.min(n, first.length))), stream: replay() };
}

const onPathCache = new Map<string, boolean>();
function onPath(cmd: string): boolean {
  let found = onPathCache.get(cmd);
  if (found === undefined) {
    found = (process.env['PATH'] ?? '/usr/bin:/bin').split(delimiter).some((dir) => {
      try {
        accessSync(join(dir, cmd), fsConstants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
    onPathCache.set(cmd, found);
  }
  return found;
}

function zstdTransform(): Transform | null {
  const z = zlib as unknown as { createZstdDecompress?: (opts?: zlib.ZlibOptions) => Transform };
  return typeof z.createZstdDecompress === 'function' ? z.createZstdDecompress({ chunkSize: 1 << 20 }) : null;
}

async function* throughTransform(source: AsyncIterable<Buffer>, t: Transform, what: string): AsyncGenerator<Buffer> {
  const input = Readable.from(source, { objectMode: false });
  input.on('error', (e) => t.destroy(e));
  input.pipe(t);
  try {
    for await (const chunk of t) yield chunk as Buffer;
  } catch (err) {
    if (err instanceof AgentError) throw err;
    throw new AgentError('ImageWriteError', `Writing image to device failed: ${what} decompression failed: ${(err as Error).message}`);
  } finally {
    input.destroy();
  }
}

async function* throughProcess(source: AsyncIterable<Buffer>, cmd: string, args: string[]): AsyncGenerator<Buffer> {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code));
  });
  const input = Readable.from(source, { objectMode: false });
  let inputError: unknown = null;
  input.on('error', (e) => {
    inputError = e;
    child.kill('SIGKILL');
  });
  child.stdin.on('error', () => undefined); // EPIPE when the decompressor exits early: reported below
  input.pipe(child.stdin);
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer;
    const code = await exited;
    if (inputError) throw inputError;
    if (code !== 0) throw new AgentError('ImageWriteError', `Writing image to device failed: ${cmd} exited with ${code}: ${stderr.trim()}`);
  } catch (err) {
    if (inputError && !(err instanceof AgentError)) throw inputError;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new AgentError('ImageWriteError', `${cmd} is not installed: cannot decompress this image`);
    throw err;
  } finally {
    input.destroy();
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

let zstdWorker: boolean | undefined;

export interface Decompressed {
  stream: AsyncGenerator<Buffer>;
  compression: Compression;
  /** A chunk's memory is reused once the next is asked for: a consumer that keeps chunks copies them. */
  reusesChunks: boolean;
  /** What decompresses, for the log: `zstd -dc`, `zlib on the hash worker`… (null: not compressed). */
  via: string | null;
}

export interface DecompressOptions {
  /**
   * The device writer's pool: with one, zstd is decompressed by the zstd worker into its buffers.
   * Without (a probe that reads only the first bytes), a decompressor that yields output at once
   * is used: the worker's first chunk is a whole 4 MiB buffer, up to 4 MiB of input downloaded
   * for nothing.
   */
  pool?: BufferPool;
  /** Hashing the zstd worker may take over (see ZstdWorkerOptions). */
  hash?: ZstdWorkerOptions['hash'];
  /** The source's chunks are valid only until the next is asked for (a transient download). */
  sourceReusesChunks?: boolean;
}

// Copies of at most 64 KiB come from malloc's heap and are reused as V8 frees them; bigger ones
// are mapped and faulted in page by page (a qcow2 write took 127k page faults and +30 MiB of RSS).
const COPY_PIECE = 64 * 1024;

/** Each chunk copied, in pieces: for consumers that keep chunks of a source that reuses their memory. */
export async function* copied(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    for (let off = 0; off < chunk.length; off += COPY_PIECE) yield Buffer.from(chunk.subarray(off, off + COPY_PIECE));
  }
}

/** Decompresses `source` if it is compressed; returns the stream and what it was. */
export async function decompressing(source: AsyncIterable<Buffer>, o: DecompressOptions = {}): Promise<Decompressed> {
  const { head, stream: peeked } = await peek(source, 8);
  const compression = detectCompression(head);
  const reused = o.sourceReusesChunks === true;
  // Decompressors that queue their input (pipes, zlib streams) keep chunks: they get copies.
  const inWorker = compression === 'zstd' && !!o.pool && (zstdWorker ??= zstdWorkerAvailable());
  const stream = reused && compression !== null && !inWorker ? copied(peeked) : peeked;
  const through = (s: AsyncGenerator<Buffer>, via: string | null, reusesChunks = false): Decompressed => ({ stream: s, compression, reusesChunks, via });
  switch (compression) {
    case null:
      return through(stream, null, reused);
    case 'gzip':
      return through(throughTransform(stream, zlib.createGunzip({ chunkSize: 1 << 20 }), 'gzip'), 'zlib gunzip');
    case 'zstd': {
      // The worker copies each chunk into its input slots before it asks for the next.
      if (inWorker && o.pool) {
        const shared = !!o.hash?.digest.thread;
        return through(zstdInWorker(stream, { pool: o.pool, hash: o.hash ?? null }), shared ? 'zlib zstd on the hash worker' : 'zlib zstd on a worker', true);
      }
      const t = onPath('zstd') ? null : zstdTransform();
      return t ? through(throughTransform(stream, t, 'zstd'), 'zlib zstd stream') : through(throughProcess(stream, 'zstd', ['-dc', '-q']), 'zstd -dc');
    }
    case 'xz':
      return through(throughProcess(stream, 'xz', ['-dc', '-T0']), 'xz -dc');
    case 'bzip2':
      return through(throughProcess(stream, 'bzip2', ['-dc']), 'bzip2 -dc');
  }
}
