// plain-http.ts against real servers on loopback: node:http for well-formed answers, a raw TCP
// server for answers written byte by byte, cut short or malformed.
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { plainHttpApplies, plainHttpGet, type PlainHttpOptions } from '../../src/agent/image/plain-http.js';
import { BufferPool, POOL_BUFFER_BYTES, offeredPoolBuffers } from '../../src/agent/image/buffer-pool.js';
import { downloadImage } from '../../src/agent/image/download.js';
import { silentLogger } from '../../src/agent/log.js';

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

async function listen(server: http.Server | net.Server, scheme = 'http'): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  closers.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A self-signed certificate for 127.0.0.1, made by openssl for this run. */
function selfSigned(): { key: Buffer; cert: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'ferrum-tls-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem')], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A raw TCP server that answers every connection with `answer(socket, request head)`. */
async function rawServer(answer: (s: net.Socket, head: string) => void | Promise<void>): Promise<string> {
  const server = net.createServer((s) => {
    let head = '';
    s.on('error', () => undefined);
    s.on('data', (d) => {
      head += d.toString('latin1');
      if (head.includes('\r\n\r\n')) void answer(s, head);
    });
  });
  return listen(server);
}

/** Reads the whole body the way the image pipeline does: each chunk used before the next is asked for. */
async function digestOf(body: AsyncIterable<Buffer>): Promise<{ sha: string; bytes: number; chunks: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  let chunks = 0;
  for await (const c of body) {
    h.update(c);
    bytes += c.length;
    chunks++;
  }
  return { sha: h.digest('hex'), bytes, chunks };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Waits up to a second for `done()`. */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 50 && !done(); i++) await sleep(20);
}

/** A server that announces 100 MB, sends `bytes` of it (a chunk is a whole pool buffer) and waits; `hungUp()` says whether the client closed. */
async function neverEndingAnswer(bytes: number): Promise<{ base: string; hungUp: () => boolean }> {
  let closed = false;
  const base = await rawServer((s) => {
    s.on('close', () => (closed = true));
    s.write('HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n');
    s.write(Buffer.alloc(bytes));
  });
  return { base, hungUp: () => closed };
}
const signal = () => new AbortController().signal;

/** Pools of the writer's size (5 buffers of 4 MiB), one per request, to check what comes back. */
let pool = new BufferPool(5);
const POOL_SIZE = 5;
afterEach(() => {
  pool = new BufferPool(POOL_SIZE);
});

/** plainHttpGet reading into this test's pool. */
function get(url: string, headers: Record<string, string> = {}, sig: AbortSignal = signal(), o: Partial<PlainHttpOptions> = {}) {
  return plainHttpGet(new URL(url), headers, sig, { memory: pool, ...o });
}

/** Every pool buffer is back (the reader gives back what it holds once the body is over). */
async function poolIsWhole(): Promise<void> {
  await until(() => pool.available === POOL_SIZE);
  expect(pool.available).toBe(POOL_SIZE);
}

describe('plainHttpGet', () => {
  it('streams a 200 body many times the pool buffers, with the answer\'s headers and the request\'s', async () => {
    const data = randomBytes(24 * 1024 * 1024 + 321);
    let seen: http.IncomingHttpHeaders = {};
    const base = await listen(
      http.createServer((req, res) => {
        seen = req.headers;
        res.writeHead(200, { 'content-length': data.length, etag: '"v1"', 'x-two': ['a', 'b'] });
        // Many writes of odd sizes: reads straddle the pool buffers.
        let off = 0;
        const pump = () => {
          while (off < data.length) {
            const n = Math.min(data.length - off, 100_003);
            const more = res.write(data.subarray(off, off + n));
            off += n;
            if (!more) return void res.once('drain', pump);
          }
          res.end();
        };
        pump();
      }),
    );
    const a = await get(`${base}/img?x=1`, { authorization: 'Bearer t', range: 'bytes=0-' });
    expect(a).not.toBeNull();
    expect(a!.statusCode).toBe(200);
    expect(a!.headers['etag']).toBe('"v1"');
    expect(a!.headers['x-two']).toBe('a, b');
    expect(a!.headers['content-length']).toBe(String(data.length));
    const got = await digestOf(a!.body);
    expect(got.bytes).toBe(data.length);
    expect(got.sha).toBe(sha(data));
    expect(seen['authorization']).toBe('Bearer t');
    expect(seen['range']).toBe('bytes=0-');
    expect(seen['host']).toBe(new URL(base).host);
    // Whole pool buffers, and the rest at the end.
    expect(got.chunks).toBe(Math.ceil(data.length / POOL_BUFFER_BYTES));
    await poolIsWhole();
  });

  it('reuses chunk memory only after the consumer asked for the next chunk', async () => {
    const data = randomBytes(16 * 1024 * 1024);
    const base = await listen(http.createServer((_req, res) => res.writeHead(200, { 'content-length': data.length }).end(data)));
    const a = await get(`${base}/`);
    let off = 0;
    const past: Array<{ view: Buffer; copy: Buffer }> = [];
    for await (const c of a!.body) {
      // The chunk is right while it is held, even after a pause that lets the socket read ahead.
      await sleep(0);
      expect(c.equals(data.subarray(off, off + c.length))).toBe(true);
      past.push({ view: c, copy: Buffer.from(c) });
      off += c.length;
    }
    expect(off).toBe(data.length);
    // The reader holds at most two pool buffers: a 16 MiB body cannot pass without their memory being used again.
    const overwritten = past.filter((p) => !p.view.equals(p.copy)).length;
    expect(overwritten).toBeGreaterThan(0);
    await poolIsWhole();
  });

  it('a consumer that takes a chunk\'s pool buffer keeps it intact, and the reader goes on in others from the pool', async () => {
    const data = randomBytes(5 * POOL_BUFFER_BYTES + 12_345);
    const base = await listen(http.createServer((_req, res) => res.writeHead(200, { 'content-length': data.length }).end(data)));
    const a = await get(`${base}/`);
    const kept: Array<{ whole: Buffer; view: Buffer; at: number }> = [];
    let off = 0;
    for await (const c of a!.body) {
      const take = offeredPoolBuffers.get(c);
      expect(take, 'every chunk of the body lies in a pool buffer').toBeDefined();
      // Taken: the chunk's memory is the consumer's until it gives the buffer back to the pool.
      kept.push({ whole: take!(), view: c, at: off });
      off += c.length;
      // Give back all but the last two taken, as a writer does when their writes are done.
      while (kept.length > 2) {
        const k = kept.shift()!;
        expect(k.view.equals(data.subarray(k.at, k.at + k.view.length))).toBe(true);
        pool.release(k.whole);
      }
    }
    expect(off).toBe(data.length);
    for (const k of kept.splice(0)) {
      expect(k.view.equals(data.subarray(k.at, k.at + k.view.length)), 'taken chunks are not overwritten').toBe(true);
      pool.release(k.whole);
    }
    await poolIsWhole();
  });

  it('waits for a pool buffer when the consumer holds them all, and reads on once one comes back', async () => {
    const data = randomBytes(4 * POOL_BUFFER_BYTES);
    const base = await listen(http.createServer((_req, res) => res.writeHead(200, { 'content-length': data.length }).end(data)));
    pool = new BufferPool(2); // the consumer takes both
    const waits: boolean[] = [];
    const a = await plainHttpGet(new URL(`${base}/`), {}, signal(), { memory: pool, onWaitForMemory: (w) => waits.push(w) });
    const it = a!.body[Symbol.asyncIterator]();
    const first = (await it.next()).value as Buffer;
    const w1 = offeredPoolBuffers.get(first)!();
    const second = (await it.next()).value as Buffer;
    const w2 = offeredPoolBuffers.get(second)!();
    expect(Buffer.concat([first, second]).equals(data.subarray(0, 2 * POOL_BUFFER_BYTES))).toBe(true);
    // No buffer left for the reader: the next chunk waits, and the reader says why.
    const third = it.next();
    const early = await Promise.race([third.then(() => 'chunk'), sleep(300).then(() => 'waiting')]);
    expect(early).toBe('waiting');
    expect(waits).toEqual([true]);
    pool.release(w1);
    const c3 = (await third).value as Buffer;
    expect(c3.equals(data.subarray(2 * POOL_BUFFER_BYTES, 3 * POOL_BUFFER_BYTES))).toBe(true);
    expect(waits.slice(0, 2)).toEqual([true, false]);
    pool.release(w2); // the reader reuses the untaken third buffer; this one is for the fourth
    const c4 = (await it.next()).value as Buffer;
    expect(c4.equals(data.subarray(3 * POOL_BUFFER_BYTES))).toBe(true);
    expect((await it.next()).done).toBe(true);
    await until(() => pool.available === 2);
    expect(pool.available).toBe(2);
    pool = new BufferPool(POOL_SIZE);
  });

  it('reads an https body the same way; a certificate that does not verify is refused unless insecure', async () => {
    const data = randomBytes(6 * 1024 * 1024 + 5);
    const base = await listen(https.createServer(selfSigned(), (_req, res) => res.writeHead(200, { 'content-length': data.length }).end(data)), 'https');
    await expect(get(`${base}/`)).rejects.toThrow(/self[- ]signed certificate/);
    const a = await get(`${base}/img`, {}, signal(), { insecure: true });
    expect(a!.statusCode).toBe(200);
    const got = await digestOf(a!.body);
    expect(got.bytes).toBe(data.length);
    expect(got.sha).toBe(sha(data));
  });

  it('a 206 answer is passed on with its Content-Range', async () => {
    const data = randomBytes(300_000);
    const base = await listen(
      http.createServer((req, res) => {
        const from = Number(/bytes=(\d+)-/.exec(req.headers.range ?? '')?.[1] ?? 0);
        res.writeHead(206, { 'content-length': data.length - from, 'content-range': `bytes ${from}-${data.length - 1}/${data.length}` }).end(data.subarray(from));
      }),
    );
    const a = await get(`${base}/`, { range: 'bytes=1000-' });
    expect(a!.statusCode).toBe(206);
    expect(a!.headers['content-range']).toBe(`bytes 1000-${data.length - 1}/${data.length}`);
    expect((await digestOf(a!.body)).sha).toBe(sha(data.subarray(1000)));
  });

  it('is not the plain case (null, connection closed) for a chunked answer, a 404, a redirect, or a head over 64 KiB', async () => {
    const closed: string[] = [];
    const base = await listen(
      http.createServer((req, res) => {
        req.socket.on('close', () => closed.push(req.url ?? ''));
        if (req.url === '/chunked') {
          res.writeHead(200); // no Content-Length: Node sends it chunked
          res.write('abc');
          return; // never ends: only a closed connection ends this test's request
        }
        if (req.url === '/404') return void res.writeHead(404, { 'content-length': 9 }).end('not found');
        if (req.url === '/302') return void res.writeHead(302, { location: '/x', 'content-length': 0 }).end();
        res.writeHead(200, { 'content-length': 1, 'x-big': 'y'.repeat(70_000) }).end('z');
      }),
    );
    for (const path of ['/chunked', '/404', '/302', '/big']) {
      expect(await get(`${base}${path}`), path).toBeNull();
    }
    await until(() => closed.length >= 4);
    expect(closed.sort()).toEqual(['/302', '/404', '/big', '/chunked']);
    await poolIsWhole();
  });

  it('parses a head that arrives a byte at a time, with the body\'s first bytes in its last read', async () => {
    const body = Buffer.from('hello, image');
    const base = await rawServer(async (s) => {
      const head = Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nETag: "e"\r\n\r\n`);
      for (const byte of head) {
        s.write(Buffer.from([byte]));
        await sleep(1);
      }
      s.end(body);
    });
    const a = await get(`${base}/`);
    expect(a!.headers['etag']).toBe('"e"');
    const chunks: Buffer[] = [];
    for await (const c of a!.body) chunks.push(Buffer.from(c));
    expect(Buffer.concat(chunks).toString()).toBe('hello, image');
  });

  it('is not the plain case for a malformed head (folded header, no status line)', async () => {
    const answers = ['HTTP/1.1 200 OK\r\nContent-Length: 1\r\n folded\r\n\r\nx', 'ICY 200 OK\r\nContent-Length: 1\r\n\r\nx', 'HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx'];
    let i = 0;
    const base = await rawServer((s) => void s.end(answers[i++] ?? ''));
    for (const _ of answers) expect(await get(`${base}/`)).toBeNull();
  });

  it('a connection closed before Content-Length is reached passes on its whole 4 KiB blocks, then ends with "other side closed"', async () => {
    const sent = randomBytes(2 * 4096 + 3000);
    const base = await rawServer((s) => {
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n');
      s.end(sent);
    });
    const a = await get(`${base}/`);
    const got: Buffer[] = [];
    await expect(
      (async () => {
        for await (const c of a!.body) got.push(Buffer.from(c));
      })(),
    ).rejects.toThrow('other side closed');
    // The rest (3000 bytes) is asked for again on resume: later pool buffers stay block-aligned.
    expect(Buffer.concat(got).equals(sent.subarray(0, 2 * 4096))).toBe(true);
    await poolIsWhole();
  });

  it('tells of every read while a chunk is still filling (what keeps the stall watchdog quiet)', async () => {
    let reads = 0;
    const trickle = await rawServer(async (s) => {
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n');
      for (let i = 0; i < 5 && !s.destroyed; i++) {
        await sleep(40);
        s.write(Buffer.alloc(10_000));
      }
    });
    const a = await get(`${trickle}/`, {}, signal(), { onRead: () => reads++ });
    const it = a!.body[Symbol.asyncIterator]();
    const next = it.next();
    await until(() => reads >= 5);
    // 50 KB is far from a whole pool buffer: no chunk yet, but the reads were seen.
    expect(reads).toBeGreaterThanOrEqual(5);
    a!.close();
    await expect(next).rejects.toThrow('closed');
    await poolIsWhole();
  });

  it('bytes beyond Content-Length are not passed on', async () => {
    const base = await rawServer((s) => void s.end('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbodyEXTRA'));
    const a = await get(`${base}/`);
    const chunks: Buffer[] = [];
    for await (const c of a!.body) chunks.push(Buffer.from(c));
    expect(Buffer.concat(chunks).toString()).toBe('body');
  });

  it('an abort while the body streams ends it with the abort reason and closes the connection', async () => {
    const { base, hungUp } = await neverEndingAnswer(POOL_BUFFER_BYTES + 100_000);
    const ac = new AbortController();
    const a = await get(`${base}/`, {}, ac.signal);
    const reading = (async () => {
      for await (const _ of a!.body) ac.abort(new Error('stalled'));
    })();
    await expect(reading).rejects.toThrow('stalled');
    await until(hungUp);
    expect(hungUp()).toBe(true);
    await poolIsWhole();
  });

  it('an abort before the head arrives rejects with the reason', async () => {
    const base = await rawServer(() => undefined); // never answers
    const ac = new AbortController();
    const p = get(`${base}/`, {}, ac.signal);
    setTimeout(() => ac.abort(new Error('no head in time')), 50);
    await expect(p).rejects.toThrow('no head in time');
    await poolIsWhole();
  });

  it('a closed port rejects with the connection error', async () => {
    const server = net.createServer();
    const base = await listen(server);
    await closers.pop()!();
    await expect(get(`${base}/`)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('a consumer that stops early hangs up', async () => {
    const { base, hungUp } = await neverEndingAnswer(POOL_BUFFER_BYTES + 200_000);
    const a = await get(`${base}/`);
    for await (const _ of a!.body) break;
    await until(hungUp);
    expect(hungUp()).toBe(true);
    await poolIsWhole();
  });

  it('reads no further ahead of a consumer that does not ask than its two pool buffers and the kernel\'s buffers', async () => {
    const size = 256 * 1024 * 1024;
    let sent = 0;
    const base = await rawServer((s) => {
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n`);
      const block = Buffer.alloc(1024 * 1024, 1);
      const pump = () => {
        while (sent < size) {
          sent += block.length;
          if (!s.write(block)) return void s.once('drain', pump);
        }
      };
      pump();
    });
    const a = await get(`${base}/`);
    const it = a!.body[Symbol.asyncIterator]();
    await it.next();
    await sleep(500);
    // Two pool buffers (8 MiB) + loopback socket buffers (a few MiB each way): far below 256 MiB.
    expect(sent).toBeLessThan(48 * 1024 * 1024);
    await it.return(undefined);
  });
});

describe('downloadImage through the plain reader', () => {
  it('does not take a consumer that holds every pool buffer (a disk still being prepared) for a stalled server', async () => {
    const data = randomBytes(4 * POOL_BUFFER_BYTES);
    const base = await listen(http.createServer((_req, res) => res.writeHead(200, { 'content-length': data.length }).end(data)));
    pool = new BufferPool(2);
    const resumes: number[] = [];
    const body = downloadImage({ urls: [`${base}/img`], imageId: 'img', stallTimeoutSec: 1, retries: 2, retryIntervalSec: 0, insecure: false, readInto: pool, log: silentLogger(), onResume: (at) => resumes.push(at) });
    const it = body[Symbol.asyncIterator]();
    const held: Buffer[] = [];
    const got: Buffer[] = [];
    for (let i = 0; i < 2; i++) {
      const c = (await it.next()).value as Buffer;
      got.push(Buffer.from(c));
      held.push(offeredPoolBuffers.get(c)!());
    }
    // The reader waits for memory for 2.5 stall timeouts: no abort, no resume.
    const third = it.next();
    await sleep(2500);
    for (const b of held) pool.release(b);
    got.push(Buffer.from(((await third).value as Buffer)));
    for (let r = await it.next(); !r.done; r = await it.next()) got.push(Buffer.from(r.value));
    expect(resumes).toEqual([]);
    expect(Buffer.concat(got).equals(data)).toBe(true);
  });
});

describe('plainHttpApplies', () => {
  it('takes http and https, without credentials in the URL or header values undici would have to check', () => {
    expect(plainHttpApplies(new URL('http://10.0.0.1:8080/img.raw'), { range: 'bytes=5-', 'if-range': '"e"' })).toBe(true);
    expect(plainHttpApplies(new URL('http://[fd00::1]/img'), {})).toBe(true);
    expect(plainHttpApplies(new URL('https://10.0.0.1/img'), {})).toBe(true);
    expect(plainHttpApplies(new URL('ftp://10.0.0.1/img'), {})).toBe(false);
    expect(plainHttpApplies(new URL('http://user:pw@10.0.0.1/img'), {})).toBe(false);
    expect(plainHttpApplies(new URL('http://10.0.0.1/img'), { authorization: 'Basic a\r\nX-Injected: 1' })).toBe(false);
    expect(plainHttpApplies(new URL('http://10.0.0.1/img'), { 'bad header': 'x' })).toBe(false);
  });
});
