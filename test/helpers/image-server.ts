// An HTTP image server for tests that can also misbehave on purpose: GET and HEAD, Range (206)
// with If-Range, strong ETags, and per-file faults — drop the connection at given offsets, stall
// (send headers and some bytes, then nothing), ignore Range (always 200), answer a fixed status,
// cap the rate, answer chunked. Files may be virtual (bytes computed from the offset), so images of hundreds of
// MiB cost no memory. Every request is recorded with what the server did to it.
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

export interface FileSource {
  size: number;
  /** Bytes [offset, offset + length). */
  read(offset: number, length: number): Buffer;
}

export interface FileOptions {
  /** Strong ETag (quoted); default: derived from the name and size. `null`: send none. */
  etag?: string | null;
  /** Answer this status (e.g. 404) with a short text body instead of the file. */
  status?: number;
  /** Answer every GET with 200 and the whole file, whatever Range says. */
  ignoreRange?: boolean;
  /** Absolute offsets: the first response that reaches one closes the connection there (each used once). */
  dropAt?: number[];
  /** Absolute offset where responses stop sending (the connection stays open until the client gives up). */
  stallAt?: number | null;
  /** 'first': only the first response that reaches stallAt stalls; 'always': every one does. */
  stallMode?: 'first' | 'always';
  /** Bytes per second (approximate), for long-running downloads. */
  rateBytesPerSec?: number | null;
  /**
   * Pause after the first 64 KiB of every response. A client that only wanted the first bytes
   * (a probe) has hung up by then, so faults meant for the real download are not spent on it.
   */
  pauseAfterFirstChunkMs?: number;
  /** Send no Content-Length: the body goes out with chunked transfer encoding. */
  chunked?: boolean;
}

export interface RequestRecord {
  method: string;
  path: string;
  range: string | null;
  ifRange: string | null;
  status: number;
  /** First byte offset of the answer. */
  start: number;
  bytesSent: number;
  outcome: 'complete' | 'dropped' | 'stalled' | 'client-closed' | 'head' | 'error-status';
}

export interface ImageServer {
  /** http://host:port */
  base: string;
  requests: RequestRecord[];
  add(name: string, data: Buffer | FileSource, opts?: FileOptions): string;
  /** Changes a file's fault options. */
  configure(name: string, opts: FileOptions): void;
  /** Requests for one file. */
  requestsFor(name: string): RequestRecord[];
  close(): Promise<void>;
}

const CHUNK = 64 * 1024;

function bufferSource(data: Buffer): FileSource {
  return { size: data.length, read: (o, l) => data.subarray(o, o + l) };
}

interface Entry {
  source: FileSource;
  opts: FileOptions;
  dropAt: number[];
  stalled: boolean;
}

/** `tls`: serve HTTPS with this key and certificate. */
export async function startImageServer(host = '127.0.0.1', port = 0, tls: { key: Buffer; cert: Buffer } | null = null): Promise<ImageServer> {
  const files = new Map<string, Entry>();
  const requests: RequestRecord[] = [];
  const sockets = new Set<Socket>();
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    res.on('error', () => undefined);
    void answer(req, res).catch(() => res.destroy());
  };
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  server.on(tls ? 'secureConnection' : 'connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  async function answer(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const rec: RequestRecord = {
      method: req.method ?? '',
      path,
      range: req.headers.range ?? null,
      ifRange: (req.headers['if-range'] as string | undefined) ?? null,
      status: 0,
      start: 0,
      bytesSent: 0,
      outcome: 'complete',
    };
    requests.push(rec);
    const entry = files.get(path);
    if (!entry || (req.method !== 'GET' && req.method !== 'HEAD')) {
      rec.status = entry ? 405 : 404;
      rec.outcome = 'error-status';
      res.writeHead(rec.status, { 'content-type': 'text/plain' }).end(entry ? 'method not allowed' : 'not found');
      return;
    }
    const { source, opts } = entry;
    if (opts.status && opts.status !== 200) {
      rec.status = opts.status;
      rec.outcome = 'error-status';
      res.writeHead(opts.status, { 'content-type': 'text/plain' }).end(`status ${opts.status} on purpose`);
      return;
    }
    const etag = opts.etag === undefined ? `"${createHash('sha1').update(`${path}:${source.size}`).digest('hex')}"` : opts.etag;
    const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/octet-stream', 'accept-ranges': opts.ignoreRange ? 'none' : 'bytes' };
    if (etag) headers['etag'] = etag;
    let start = 0;
    const end = source.size;
    const range = /^bytes=(\d+)-$/.exec(rec.range ?? '');
    const ifRangeOk = !rec.ifRange || (etag !== null && rec.ifRange === etag);
    if (range && !opts.ignoreRange && ifRangeOk) {
      start = Number(range[1]);
      if (start >= end) {
        rec.status = 416;
        rec.outcome = 'error-status';
        res.writeHead(416, { 'content-range': `bytes */${end}` }).end();
        return;
      }
      rec.status = 206;
      res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end - 1}/${end}`, ...(opts.chunked ? {} : { 'content-length': end - start }) });
    } else {
      rec.status = 200;
      res.writeHead(200, { ...headers, ...(opts.chunked ? {} : { 'content-length': end }) });
    }
    rec.start = start;
    if (req.method === 'HEAD') {
      rec.outcome = 'head';
      res.end();
      return;
    }
    await pump(entry, res, start, end, rec);
  }

  async function pump(entry: Entry, res: http.ServerResponse, start: number, end: number, rec: RequestRecord): Promise<void> {
    const { source, opts } = entry;
    const socket = res.socket;
    const closed = new Promise<void>((resolve) => {
      if (!socket || socket.destroyed) resolve();
      else socket.once('close', () => resolve());
    });
    const gone = () => !socket || socket.destroyed || res.destroyed;
    const began = Date.now();
    let pos = start;
    let first = true;
    while (pos < end) {
      if (gone()) {
        rec.outcome = 'client-closed';
        return;
      }
      const drop = entry.dropAt.filter((d) => d >= pos && d < end).sort((a, b) => a - b)[0];
      const stall = opts.stallAt !== undefined && opts.stallAt !== null && opts.stallAt >= pos && (opts.stallMode === 'always' || !entry.stalled) ? opts.stallAt : undefined;
      if (drop !== undefined && drop === pos) {
        entry.dropAt.splice(entry.dropAt.indexOf(drop), 1);
        rec.outcome = 'dropped';
        // Everything written so far has reached the kernel: the client gets exactly `drop` bytes.
        socket?.destroy();
        return;
      }
      if (stall !== undefined && stall === pos) {
        entry.stalled = true;
        rec.outcome = 'stalled';
        await closed;
        return;
      }
      let n = Math.min(CHUNK, end - pos);
      if (drop !== undefined) n = Math.min(n, drop - pos);
      if (stall !== undefined) n = Math.min(n, stall - pos);
      const data = source.read(pos, n);
      await new Promise<void>((resolve) => {
        // The callback fires once the chunk is handed to the kernel (or the write failed).
        res.write(data, () => resolve());
      });
      pos += n;
      rec.bytesSent += n;
      if (first && opts.pauseAfterFirstChunkMs) await Promise.race([sleep(opts.pauseAfterFirstChunkMs), closed]);
      first = false;
      if (opts.rateBytesPerSec) {
        const due = began + ((pos - start) / opts.rateBytesPerSec) * 1000;
        const wait = due - Date.now();
        if (wait > 0) await Promise.race([sleep(wait), closed]);
      }
    }
    if (gone()) {
      rec.outcome = 'client-closed';
      return;
    }
    await new Promise<void>((resolve) => res.end(() => resolve()));
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const base = `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${addr.port}`;
  return {
    base,
    requests,
    add(name, data, opts = {}) {
      files.set(`/${name}`, { source: Buffer.isBuffer(data) ? bufferSource(data) : data, opts, dropAt: [...(opts.dropAt ?? [])], stalled: false });
      return `${base}/${name}`;
    },
    configure(name, opts) {
      const e = files.get(`/${name}`);
      if (!e) throw new Error(`no file ${name}`);
      e.opts = opts;
      e.dropAt = [...(opts.dropAt ?? [])];
      e.stalled = false;
    },
    requestsFor(name) {
      return requests.filter((r) => r.path === `/${name}`);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
