// A static file server for benchmarks and tests: GET/HEAD with Range, sendfile-backed streams.
// Usage: node bench/serve.mjs DIR [PORT]; prints the port on stdout.
import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { join, normalize } from 'node:path';

const dir = process.argv[2] ?? '.';
const server = createServer((req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
  let st;
  try {
    st = statSync(join(dir, path));
    if (!st.isFile()) throw new Error('not a file');
  } catch {
    res.writeHead(404).end('not found');
    return;
  }
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  let start = 0;
  let end = st.size - 1;
  const headers = { 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream', etag: `"${st.size}-${st.mtimeMs}"` };
  if (range) {
    start = Number(range[1]);
    if (range[2]) end = Math.min(end, Number(range[2]));
    res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${st.size}`, 'content-length': end - start + 1 });
  } else {
    res.writeHead(200, { ...headers, 'content-length': st.size });
  }
  if (req.method === 'HEAD') return res.end();
  createReadStream(join(dir, path), { start, end, highWaterMark: 1 << 20 }).pipe(res);
});
server.listen(Number(process.argv[3] ?? 0), '127.0.0.1', () => console.log(server.address().port));
