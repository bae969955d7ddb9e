#!/usr/bin/env node
// The e2e test's HTTP server, run inside the test's network namespace: serves iPXE scripts, the
// ramdisk's kernel and initramfs and the disk image from --root (symlinks followed), answers
// HEAD (Ironic validates image URLs with it) and single byte ranges (the agent resumes
// interrupted downloads with them), and logs every request as one JSON line with epoch ms.
// Usage: node http-server.mjs --bind ADDR --port PORT --root DIR --log FILE
import { createReadStream, openSync, promises as fs, writeSync } from 'node:fs';
import { createServer } from 'node:http';
import { resolve, sep } from 'node:path';

const opt = { bind: '127.0.0.1', port: '8080', root: '.', log: '/dev/stdout' };
for (let i = 2; i < process.argv.length; i += 2) opt[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const root = resolve(opt.root);
const logFd = openSync(opt.log, 'a');
const log = (o) => writeSync(logFd, `${JSON.stringify({ t: Date.now(), ...o })}\n`);

/** Parses one "bytes=a-b" range against `size`; null: no (usable) Range header, 'bad': unsatisfiable. */
function parseRange(header, size) {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null; // several ranges or garbage: serve it all
  let start;
  let end;
  if (m[1] === '') {
    start = Math.max(0, size - Number(m[2]));
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || start > end) return 'bad';
  return { start, end };
}

const server = createServer(async (req, res) => {
  const t0 = Date.now();
  const entry = { method: req.method, url: req.url, remote: req.socket.remoteAddress, range: req.headers.range ?? null };
  const finish = (status, extra = {}) => log({ ...entry, status, ms: Date.now() - t0, ...extra });
  try {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return finish(405);
    }
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = resolve(root, `.${path}`);
    if (file !== root && !file.startsWith(root + sep)) {
      res.writeHead(403).end();
      return finish(403);
    }
    const st = await fs.stat(file).catch(() => null);
    if (!st || !st.isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return finish(404);
    }
    const headers = { 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream', 'last-modified': st.mtime.toUTCString() };
    const range = parseRange(req.headers.range, st.size);
    if (range === 'bad') {
      res.writeHead(416, { ...headers, 'content-range': `bytes */${st.size}` }).end();
      return finish(416);
    }
    const { start, end } = range ?? { start: 0, end: st.size - 1 };
    const status = range ? 206 : 200;
    res.writeHead(status, {
      ...headers,
      'content-length': st.size === 0 ? 0 : end - start + 1,
      ...(range ? { 'content-range': `bytes ${start}-${end}/${st.size}` } : {}),
    });
    if (req.method === 'HEAD' || st.size === 0) {
      res.end();
      return finish(status, { bytes: 0 });
    }
    const stream = createReadStream(file, { start, end, highWaterMark: 1 << 20 });
    stream.pipe(res);
    res.on('close', () => finish(status, { bytes: stream.bytesRead, complete: res.writableFinished }));
    stream.on('error', () => res.destroy());
  } catch (err) {
    res.writeHead(500).end();
    finish(500, { error: String(err) });
  }
});
server.listen(Number(opt.port), opt.bind, () => log({ event: 'listening', bind: opt.bind, port: Number(opt.port) }));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 2000).unref());
