// Image bodies over plain HTTP, read with the socket's `onread`: every read lands in one reused
// buffer that stays hot in the CPU's cache, and is copied from there into a small ring of 1 MiB
// buffers whose views are the chunks. undici (like node:http) gets a freshly allocated 64 KiB
// buffer per socket read and copies it again into its parser: on the bench's machine that cost
// 1.8–2.5 s of main-thread CPU per 2 GiB, where this path takes ~0.8 s. The main thread is the
// busiest thread of an image write, so that is the write's speed.
//
// The ring's memory is reused: a chunk is valid until the consumer asks for the next one
// (DownloadOptions.transientChunks), as the image pipeline's consumers are written to allow.
// Only the plain case is taken here: http: or https: (tls.connect reads into a static buffer the
// same way), no proxy, an answer of 200 or 206 with a Content-Length and no Transfer-Encoding.
// Anything else (another status, chunked, a malformed head) closes this connection and returns
// null: the caller asks again with undici, which handles it all.
import net from 'node:net';
import tls from 'node:tls';

export interface PlainAnswer {
  statusCode: 200 | 206;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** The body, in order; a chunk's memory is reused once the next one is asked for. */
  body: AsyncGenerator<Buffer>;
  /** Closes the connection (the body ends with an error if it is still being read). */
  close(): void;
}

const READ_BYTES = 256 * 1024;
const SLAB_BYTES = 1024 * 1024;
const SLABS = 4;
const MAX_HEAD = 64 * 1024;

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

/** The ring the body's chunks live in; a buffer is reused once no chunk in it is queued or held. */
class ChunkRing {
  private readonly slabs = Array.from({ length: SLABS }, () => Buffer.allocUnsafeSlow(SLAB_BYTES));
  private readonly refs = new Array<number>(SLABS).fill(0);
  private current = 0;
  private fill = 0;
  /** Chunks not yet taken by the consumer, with the slab each lives in (-1: a copy of its own). */
  private readonly queue: Array<{ data: Buffer; slab: number }> = [];
  private held = -1;

  /** Copies `data` in, as one or two chunks; what finds no free slab is copied to its own buffer. */
  put(data: Buffer): void {
    let off = 0;
    while (off < data.length) {
      if (this.fill === SLAB_BYTES) {
        if (!this.nextFree()) {
          this.push(Buffer.from(data.subarray(off)), -1);
          return;
        }
        this.current = (this.current + 1) % SLABS;
        this.fill = 0;
      }
      const n = data.copy(this.slabs[this.current]!, this.fill, off);
      this.push(this.slabs[this.current]!.subarray(this.fill, this.fill + n), this.current);
      this.fill += n;
      off += n;
    }
  }

  private push(data: Buffer, slab: number): void {
    if (slab >= 0) this.refs[slab]!++;
    this.queue.push({ data, slab });
  }

  /** The next chunk for the consumer; the one it held before is released. */
  take(): Buffer | undefined {
    this.release();
    const next = this.queue.shift();
    if (!next) return undefined;
    this.held = next.slab;
    return next.data;
  }

  release(): void {
    if (this.held >= 0) this.refs[this.held]!--;
    this.held = -1;
  }

  private nextFree(): boolean {
    return this.refs[(this.current + 1) % SLABS] === 0;
  }

  /** True when another full read fits without a copy of its own. */
  get hasRoom(): boolean {
    return SLAB_BYTES - this.fill >= READ_BYTES || this.nextFree();
  }
}

export interface PlainHttpOptions {
  /** https: do not verify the server's certificate (ipa-insecure), as undici is told. */
  insecure?: boolean;
}

/**
 * GETs `url` over a connection of its own (Connection: close). Resolves with the answer once its
 * head is in, or null when the answer is not the plain case; rejects on connection errors (a
 * certificate that does not verify included) and when `signal` aborts (with its reason).
 */
export function plainHttpGet(url: URL, headers: Record<string, string>, signal: AbortSignal, o: PlainHttpOptions = {}): Promise<PlainAnswer | null> {
  signal.throwIfAborted();
  const ring = new ChunkRing();
  let headBytes: Buffer<ArrayBufferLike> | null = Buffer.alloc(0);
  let remaining = 0;
  let failure: Error | null = null;
  let ended = false;
  let paused = false;
  let wake: (() => void) | null = null;
  let settle: ((a: PlainAnswer | null) => void) | null = null;
  let reject: ((e: Error) => void) | null = null;

  const host = url.hostname.replace(/^\[|\]$/g, '');
  const secure = url.protocol === 'https:';
  const onread: net.OnReadOpts = {
    buffer: Buffer.allocUnsafeSlow(READ_BYTES),
    callback: (n: number, buf: Uint8Array) => {
      let data = Buffer.from(buf.buffer, buf.byteOffset, n);
      if (headBytes) {
        headBytes = Buffer.concat([headBytes, data]);
        const end = headBytes.indexOf('\r\n\r\n');
        if (end < 0 && headBytes.length <= MAX_HEAD) return true;
        if (end < 0 || end > MAX_HEAD) {
          give(null);
          return false;
        }
        const parsed = parseHead(headBytes.subarray(0, end).toString('latin1'));
        data = headBytes.subarray(end + 4);
        headBytes = null;
        const length = parsed ? Number(parsed.headers['content-length']) : NaN;
        if (!parsed || (parsed.status !== 200 && parsed.status !== 206) || 'transfer-encoding' in parsed.headers || !/^\d+$/.test(parsed.headers['content-length'] ?? '') || !Number.isSafeInteger(length)) {
          give(null);
          return false;
        }
        remaining = length;
        give({ statusCode: parsed.status as 200 | 206, headers: parsed.headers, body: body(), close: () => destroy(new Error('closed')) });
      }
      if (data.length > remaining) data = data.subarray(0, remaining);
      ring.put(data);
      remaining -= data.length;
      if (remaining === 0) {
        ended = true;
        socket.destroy();
      }
      wake?.();
      // No room for another read: stop reading until the consumer frees a slab.
      if (ring.hasRoom) return true;
      paused = true;
      return false;
    },
  };
  const socket: net.Socket = secure
    ? // onread is in tls.connect since Node 15 (nodejs/node#35753); @types/node does not list it.
      tls.connect({ host, port: Number(url.port || 443), servername: net.isIP(host) ? undefined : host, rejectUnauthorized: o.insecure !== true, onread } as tls.ConnectionOptions)
    : net.connect({ host, port: Number(url.port || 80), onread });
  socket.setNoDelay(true);

  function give(a: PlainAnswer | null): void {
    if (a === null) socket.destroy();
    settle?.(a);
    settle = null;
    reject = null;
  }
  function destroy(err: Error): void {
    failure ??= err;
    socket.destroy();
    wake?.();
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
    try {
      for (;;) {
        const chunk = ring.take();
        if (paused && ring.hasRoom && !socket.destroyed) {
          paused = false;
          socket.resume();
        }
        if (chunk) {
          yield chunk;
          continue;
        }
        // Once every byte is in, a later error (a reset after the last byte) changes nothing.
        if (ended) return;
        if (failure) throw failure;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
      }
    } finally {
      ring.release();
      // A consumer that stops early hangs up; the body's bytes are not wanted any more.
      if (!ended) destroy(new Error('closed'));
      signal.removeEventListener('abort', onAbort);
    }
  }

  return new Promise<PlainAnswer | null>((resolve, rej) => {
    settle = resolve;
    reject = rej;
    if (failure) rej(failure);
  });
}
