// Image bodies over plain HTTP, read with the socket's `onread` straight into the image writer's
// pool buffers: the kernel copies each read to where the device write and the hash worker take it
// from, and a full 4 MiB buffer goes to the consumer as a chunk it may keep without a copy
// (offeredPoolBuffers). undici (like node:http) gets a freshly allocated 64 KiB buffer per socket
// read and copies it again into its parser: on the bench's machine that cost 1.8–2.5 s of
// main-thread CPU per 2 GiB, and the copies out of it another ~0.4 s. The main thread is the
// busiest thread of an image write, so that is the write's speed.
//
// A chunk the consumer does not take is valid until it asks for the next one
// (DownloadOptions.readInto); its buffer is filled again after that.
// Only the plain case is taken here: http: or https: (tls.connect reads into given memory the same
// way), no proxy, an answer of 200 or 206 with a Content-Length and no Transfer-Encoding.
// Anything else (another status, chunked, a malformed head) closes this connection and returns
// null: the caller asks again with undici, which handles it all.
import net from 'node:net';
import tls from 'node:tls';
import { offeredPoolBuffers, type BufferPool } from './buffer-pool.js';

export interface PlainAnswer {
  statusCode: 200 | 206;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** The body, in order; a chunk's memory is reused once the next one is asked for. */
  body: AsyncGenerator<Buffer>;
  /** Closes the connection (the body ends with an error if it is still being read). */
  close(): void;
}

/** Where the head is read, and any read that finds no pool buffer free (it is copied on). */
const SPARE_BYTES = 128 * 1024;
const MAX_HEAD = 64 * 1024;
/**
 * Pool buffers the reader holds at once (being filled, queued, handed out but not taken): the rest
 * are the writer's, which must always get one to make progress.
 */
const MAX_OWNED = 2;
/** A broken connection passes on whole 4 KiB blocks, so later pool buffers stay aligned for direct I/O. */
const BREAK_ALIGN = 4096;

/** True when a request for `url` with `headers` can take this path. */
export function plainHttpApplies(url: URL, headers: Record<string, string>): boolean {
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password) return false;
  // Values that would need undici's validation (CR/LF, non-latin1) go there.
  return Object.entries(headers).every(([k, v]) => /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(k) && /^[\t\x20-\x7e\x80-\xff]*$/.test(v));
}

function parseHead(head: string): { status: number; headers: Record<string, string> } | null {
  const lines = head.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0] ?? '');
  if (!m) return null;
  // No prototype: a header called `__proto__` or `constructor` is just a header.
  const headers: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    // Obsolete line folding and nameless lines: malformed for this path.
    if (colon <= 0 || line[0] === ' ' || line[0] === '\t') return null;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return { status: Number(m[1]), headers };
}

/** A chunk for the consumer: a pool buffer (or its filled part), or a copy that is not. */
interface Chunk {
  view: Buffer;
  whole: Buffer | null;
}

/**
 * The pool buffers a body is read into. A full buffer is queued for the consumer; one the consumer
 * gives back untaken is filled again, one it takes is replaced from the pool.
 */
class PoolSink {
  private current: Buffer | null = null;
  private fill = 0;
  private readonly free: Buffer[] = [];
  private readonly queue: Chunk[] = [];
  /** Pool buffers held: current, free, queued, handed out, and one on its way from the pool. */
  private owned = 0;
  private closed = false;

  constructor(
    private readonly pool: BufferPool,
    /** Called when a buffer to read into became available after none was. */
    private readonly onRoom: () => void,
  ) {
    this.next();
  }

  /** True when a read can land in a pool buffer. */
  get hasRoom(): boolean {
    return this.current !== null;
  }

  /** Where the next read lands, or null when no buffer is free. */
  target(): Buffer | null {
    return this.current ? this.current.subarray(this.fill) : null;
  }

  /** True when `buf` is what target() gave: the free part of the buffer being filled. */
  isTarget(buf: Uint8Array): boolean {
    const c = this.current;
    return c !== null && buf.buffer === c.buffer && buf.byteOffset === c.byteOffset + this.fill;
  }

  /** `n` bytes were read into target(). */
  commit(n: number): void {
    this.fill += n;
    if (this.fill === this.current!.length) this.seal();
  }

  /** Copies bytes read elsewhere in; what finds no buffer is queued as a copy of its own. */
  put(data: Buffer): void {
    let off = 0;
    while (off < data.length) {
      if (!this.current) {
        this.queue.push({ view: Buffer.from(data.subarray(off)), whole: null });
        return;
      }
      const n = data.copy(this.current, this.fill, off);
      off += n;
      this.commit(n);
    }
  }

  /** The body is complete: what is filled goes out. */
  finish(): void {
    if (this.current && this.fill > 0) this.seal();
  }

  /** The connection broke: whole blocks of what is filled go out, the rest is read again on resume. */
  breakOff(): void {
    const keep = this.fill - (this.fill % BREAK_ALIGN);
    this.fill = keep;
    if (this.current && keep > 0) this.seal();
  }

  take(): Chunk | undefined {
    return this.queue.shift();
  }

  /** The consumer took `whole`: it is the consumer's (and the pool's) from now on. */
  taken(): void {
    this.owned--;
    if (this.current || this.closed) return;
    this.next();
    if (this.current) this.onRoom();
  }

  /** The consumer asked for the next chunk without taking this one. */
  giveBack(whole: Buffer): void {
    this.accept(whole);
  }

  /** A buffer for this sink (given back untaken, or from the pool): filled next, kept, or released if closed. */
  private accept(buf: Buffer): void {
    if (this.closed) {
      this.owned--;
      this.pool.release(buf);
    } else if (this.current) {
      this.free.push(buf);
    } else {
      this.current = buf;
      this.onRoom();
    }
  }

  /** Every buffer not handed out goes back to the pool. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const back = [...this.free.splice(0), ...this.queue.splice(0).flatMap((c) => (c.whole ? [c.whole] : []))];
    if (this.current) back.push(this.current);
    this.current = null;
    for (const b of back) {
      this.owned--;
      this.pool.release(b);
    }
  }

  private seal(): void {
    this.queue.push({ view: this.current!.subarray(0, this.fill), whole: this.current });
    this.current = null;
    this.fill = 0;
    this.next();
  }

  /** A buffer to fill next: one given back, else one from the pool while fewer than MAX_OWNED are held. */
  private next(): void {
    const again = this.free.pop();
    if (again) {
      this.current = again;
      return;
    }
    if (this.owned >= MAX_OWNED) return;
    this.owned++;
    const got = this.pool.acquire();
    if (got instanceof Promise) {
      void got.then((b) => this.accept(b));
    } else {
      this.current = got;
    }
  }
}

export interface PlainHttpOptions {
  /** The pool buffers the body is read into (the image writer's). */
  memory: BufferPool;
  /** https: do not verify the server's certificate (ipa-insecure), as undici is told. */
  insecure?: boolean;
  /** Called on every read: the connection is alive even while a 4 MiB chunk is still filling. */
  onRead?: () => void;
  /**
   * Called with true when reading stops because no pool buffer is free (the consumer's
   * back-pressure, not a silent server), and with false when it reads again.
   */
  onWaitForMemory?: (waiting: boolean) => void;
}

/**
 * GETs `url` over a connection of its own (Connection: close). Resolves with the answer once its
 * head is in, or null when the answer is not the plain case; rejects on connection errors (a
 * certificate that does not verify included) and when `signal` aborts (with its reason).
 */
export function plainHttpGet(url: URL, headers: Record<string, string>, signal: AbortSignal, o: PlainHttpOptions): Promise<PlainAnswer | null> {
  signal.throwIfAborted();
  let headBytes: Buffer<ArrayBufferLike> | null = Buffer.alloc(0);
  let remaining = 0;
  let failure: Error | null = null;
  let ended = false;
  let paused = false;
  let wake: (() => void) | null = null;
  let settle: ((a: PlainAnswer | null) => void) | null = null;
  let reject: ((e: Error) => void) | null = null;

  const sink = new PoolSink(o.memory, () => resumeIfRoom());
  function resumeIfRoom(): void {
    if (paused && sink.hasRoom && !socket.destroyed) {
      paused = false;
      o.onWaitForMemory?.(false);
      socket.resume();
    }
  }
  const spare = Buffer.allocUnsafeSlow(SPARE_BYTES);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const secure = url.protocol === 'https:';
  const onread: net.OnReadOpts = {
    // Asked again after every read: the head goes to the spare, the body into the pool buffer.
    buffer: () => (headBytes === null && sink.target()) || spare,
    callback: (n: number, buf: Uint8Array) => {
      o.onRead?.();
      if (headBytes) {
        headBytes = Buffer.concat([headBytes, buf.subarray(0, n)]);
        const end = headBytes.indexOf('\r\n\r\n');
        if (end < 0 && headBytes.length <= MAX_HEAD) return true;
        if (end < 0 || end > MAX_HEAD) {
          give(null);
          return false;
        }
        const parsed = parseHead(headBytes.subarray(0, end).toString('latin1'));
        const rest = headBytes.subarray(end + 4);
        headBytes = null;
        const length = parsed ? Number(parsed.headers['content-length']) : NaN;
        if (!parsed || (parsed.status !== 200 && parsed.status !== 206) || 'transfer-encoding' in parsed.headers || !/^\d+$/.test(parsed.headers['content-length'] ?? '') || !Number.isSafeInteger(length)) {
          give(null);
          return false;
        }
        remaining = length;
        const close = () => {
          destroy(new Error('closed'));
          sink.close();
        };
        give({ statusCode: parsed.status as 200 | 206, headers: parsed.headers, body: body(), close });
        received(rest.subarray(0, Math.min(rest.length, remaining)));
      } else if (sink.isTarget(buf)) {
        const m = Math.min(n, remaining);
        remaining -= m;
        sink.commit(m);
      } else {
        // A read into the spare: the first after a pause for a free buffer.
        received(Buffer.from(buf.buffer, buf.byteOffset, Math.min(n, remaining)));
      }
      if (remaining === 0) {
        ended = true;
        sink.finish();
        socket.destroy();
      }
      wake?.();
      // No buffer to read into: stop reading until the consumer or the pool frees one.
      if (sink.hasRoom) return true;
      paused = true;
      o.onWaitForMemory?.(true);
      return false;
    },
  };
  function received(data: Buffer): void {
    remaining -= data.length;
    sink.put(data);
  }
  const socket: net.Socket = secure
    ? // onread is in tls.connect since Node 15 (nodejs/node#35753); @types/node does not list it.
      tls.connect({ host, port: Number(url.port || 443), servername: net.isIP(host) ? undefined : host, rejectUnauthorized: o.insecure !== true, onread } as tls.ConnectionOptions)
    : net.connect({ host, port: Number(url.port || 80), onread });
  socket.setNoDelay(true);

  function give(a: PlainAnswer | null): void {
    if (a === null) {
      socket.destroy();
      sink.close();
    }
    settle?.(a);
    settle = null;
    reject = null;
  }
  function destroy(err: Error): void {
    if (!failure && !ended) sink.breakOff();
    failure ??= err;
    socket.destroy();
    wake?.();
    if (reject) sink.close(); // no answer was given: nobody will read the body
    reject?.(err);
    reject = null;
    settle = null;
  }
  const onAbort = () => destroy(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
  signal.addEventListener('abort', onAbort, { once: true });
  socket.on(secure ? 'secureConnect' : 'connect', () => {
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    socket.write(`GET ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\nconnection: close\r\n${extra}\r\n`, 'latin1');
  });
  socket.on('error', (err) => destroy(err));
  socket.on('close', () => {
    // undici's word for a connection closed before the answer was complete.
    if (!ended) destroy(new Error('other side closed'));
  });

  async function* body(): AsyncGenerator<Buffer> {
    let out: { chunk: Chunk; taken: boolean } | null = null;
    try {
      for (;;) {
        const chunk = sink.take();
        resumeIfRoom();
        if (chunk) {
          const held = { chunk, taken: false };
          out = held;
          if (chunk.whole) {
            const whole = chunk.whole;
            offeredPoolBuffers.set(chunk.view, () => {
              held.taken = true;
              sink.taken();
              return whole;
            });
          }
          yield chunk.view;
          out = null;
          giveBackUntaken(held);
          continue;
        }
        // Once every byte is in, a later error (a reset after the last byte) changes nothing.
        if (ended) return;
        if (failure) throw failure;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
      }
    } finally {
      // A consumer that stops early hangs up; the body's bytes are not wanted any more.
      if (!ended) destroy(new Error('closed'));
      sink.close();
      if (out) giveBackUntaken(out);
      signal.removeEventListener('abort', onAbort);
    }
  }
  function giveBackUntaken(held: { chunk: Chunk; taken: boolean }): void {
    offeredPoolBuffers.delete(held.chunk.view);
    if (held.chunk.whole && !held.taken) sink.giveBack(held.chunk.whole);
  }

  return new Promise<PlainAnswer | null>((resolve, rej) => {
    settle = resolve;
    reject = rej;
    if (failure) rej(failure);
  });
}
