// Runs the zstd worker (dist/, as built by `npm run build`) on the Node.js it is started with — the
// ramdisk's Node 24, whose zlib has zstd — and prints what happened as JSON, for
// test/unit/zstd-worker.test.ts. Usage: node zstd-worker-driver.mjs <scenario> <file.zst> [out]
//   write:    decompressing() (as the agent streams an image) → rawOps → DeviceWriter onto `out`,
//             with the compressed bytes hashed by a worker digest that the decompressor shares;
//   chunks:   the decompressed chunks' sizes and sha256, taking none of the offered buffers;
//   stop:     the consumer stops after one chunk; then the pool and the shared digest must be whole.
import { createHash } from 'node:crypto';
import { openSync, readSync, closeSync } from 'node:fs';
import { open } from 'node:fs/promises';

const dist = new URL('../../../dist/agent/image/', import.meta.url);
const { decompressing } = await import(new URL('decompress.js', dist).href);
const { DeviceWriter, rawOps } = await import(new URL('device-writer.js', dist).href);
const { BufferPool } = await import(new URL('buffer-pool.js', dist).href);
const { parallelDigest } = await import(new URL('parallel-digest.js', dist).href);
const { zstdWorkerAvailable } = await import(new URL('zstd-worker.js', dist).href);

const [scenario, file, out] = process.argv.slice(2);

/** The file in 64 KiB chunks, as a download delivers it. */
async function* chunks(path) {
  const fd = openSync(path, 'r');
  try {
    for (;;) {
      const b = Buffer.allocUnsafe(64 * 1024);
      const n = readSync(fd, b, 0, b.length, null);
      if (n === 0) return;
      yield b.subarray(0, n);
    }
  } finally {
    closeSync(fd);
  }
}

/** Free buffers in `pool`. The acquire() that finds none waits; the first buffer given back goes to it and back to the pool. */
function freeIn(pool) {
  const got = [];
  for (let b = pool.acquire(); !(b instanceof Promise); b = pool.acquire()) got.push(b);
  for (const b of got) pool.release(b);
  return got.length;
}

/** A hash tap as stream-image.ts has one: hashes chunks until handed over. */
function tapped(source, digest) {
  let hashed = 0;
  let stopped = false;
  const stream = (async function* () {
    for await (const c of source) {
      if (!stopped) {
        const w = digest.update(c);
        if (w) await w;
        hashed += c.length;
      }
      yield c;
    }
  })();
  return { stream, hash: { digest, handOver: () => ((stopped = true), hashed) } };
}

const result = { node: process.version, available: zstdWorkerAvailable() };
try {
  if (scenario === 'write') {
    const digest = parallelDigest('sha256');
    const { stream: src, hash } = tapped(chunks(file), digest);
    const fh = await open(out, 'w+');
    const writer = new DeviceWriter(fh, { deviceName: out, deviceSize: 1 << 30, preZeroed: false, direct: null });
    const d = await decompressing(src, { pool: writer.pool, hash });
    result.reusesChunks = d.reusesChunks;
    result.compression = d.compression;
    for await (const op of rawOps(d.stream, writer.pool)) await writer.apply(op);
    await writer.finish();
    await fh.close();
    result.extent = writer.extent;
    result.digest = await digest.digest();
    result.poolFree = freeIn(writer.pool);
  } else if (scenario === 'chunks') {
    const pool = new BufferPool(4);
    const d = await decompressing(chunks(file), { pool });
    const h = createHash('sha256');
    result.sizes = [];
    for await (const c of d.stream) {
      h.update(c);
      result.sizes.push(c.length);
    }
    result.sha256 = h.digest('hex');
    result.poolFree = freeIn(pool);
  } else if (scenario === 'stop') {
    const digest = parallelDigest('sha256');
    const { stream: src, hash } = tapped(chunks(file), digest);
    const pool = new BufferPool(4);
    const d = await decompressing(src, { pool, hash });
    for await (const c of d.stream) {
      result.first = c.length;
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
    result.poolFree = freeIn(pool);
    result.digestAfterStop = (await digest.digest()).length;
  }
} catch (err) {
  result.error = { name: err.name, code: err.code, message: err.message };
}
process.stdout.write(JSON.stringify(result));
process.exit(0);
