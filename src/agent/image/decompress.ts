// Container detection and on-the-fly decompression. gzip runs in node:zlib off the main thread; xz
// and zstd run as `xz -dc` / `zstd -dc` subprocesses fed through pipes with back-pressure (nothing
// is buffered beyond pipe sizes). Node 24's zlib zstd is only the fallback when there is no zstd
// binary: on a 2 GiB image it took 11–16 s and 10–22 s of CPU where the subprocess took 6–8 s
// (bench/image-write, raw.zst; most of it garbage collection and thread-pool hand-offs per chunk).
// Feeding zstd through FIFOs from worker threads was slower still (4.8–5.8 s without writing a
// byte): 64 KiB pipes cost a context switch each, and libuv's stdio socketpairs buffer more.
import * as zlib from 'node:zlib';
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { Readable, type Transform } from 'node:stream';
import { AgentError } from '../errors.js';

export type Compression = 'gzip' | 'xz' | 'zstd' | 'bzip2' | null;

export function detectCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (head.length >= 3 && head.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
  return null;
}

/** Reads until at least `n` bytes are available; returns them and an iterable that replays them first. */
export async function peek(source: AsyncIterable<Buffer>, n: number): Promise<{ head: Buffer; stream: AsyncIterable<Buffer> }> {
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
    taken.push(r.value);
    have += r.value.length;
  }
  const head = Buffer.concat(taken);
  async function* replay(): AsyncGenerator<Buffer> {
    let finished = done;
    try {
      if (head.length) yield head;
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
  return { head: head.subarray(0, Math.min(n, head.length)), stream: replay() };
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

/** Decompresses `source` if it is compressed; returns the stream and what it was. */
export async function decompressing(source: AsyncIterable<Buffer>): Promise<{ stream: AsyncIterable<Buffer>; compression: Compression }> {
  const { head, stream } = await peek(source, 8);
  const compression = detectCompression(head);
  switch (compression) {
    case null:
      return { stream, compression };
    case 'gzip':
      return { stream: throughTransform(stream, zlib.createGunzip({ chunkSize: 1 << 20 }), 'gzip'), compression };
    case 'zstd': {
      const t = onPath('zstd') ? null : zstdTransform();
      return { stream: t ? throughTransform(stream, t, 'zstd') : throughProcess(stream, 'zstd', ['-dc', '-q']), compression };
    }
    case 'xz':
      return { stream: throughProcess(stream, 'xz', ['-dc', '-T0']), compression };
    case 'bzip2':
      return { stream: throughProcess(stream, 'bzip2', ['-dc']), compression };
  }
}
