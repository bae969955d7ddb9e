// A download whose chunks are transient (plain-http.ts reuses their memory once the next one is
// asked for) must reach every consumer intact: peek, which may hold a chunk while it asks for more,
// and decompressors that queue their input (zlib streams, xz/zstd pipes).
import { describe, expect, it } from 'vitest';
import { randomBytes, createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { decompressing, peek } from '../../src/agent/image/decompress.js';

/**
 * Yields `data` in chunks of the given sizes, every chunk in the same buffer, which is scribbled
 * over as soon as the consumer asks for the next: what a consumer keeps without a copy is wrong.
 */
async function* reusing(data: Buffer, sizes: number[]): AsyncGenerator<Buffer> {
  const shared = Buffer.alloc(Math.max(...sizes));
  let off = 0;
  let i = 0;
  while (off < data.length) {
    const n = Math.min(sizes[i++ % sizes.length]!, data.length - off);
    data.copy(shared, 0, off, off + n);
    yield shared.subarray(0, n);
    shared.fill(0xee);
    off += n;
  }
}

async function collect(s: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('transient chunks', () => {
  it('peek copies the chunks it holds while it asks for more (first chunks shorter than asked)', async () => {
    const data = randomBytes(100_000);
    const { head, stream } = await peek(reusing(data, [1, 2, 3, 4096]), 8);
    expect(head.equals(data.subarray(0, 8))).toBe(true);
    expect((await collect(stream)).equals(data)).toBe(true);
  });

  it('the reusing source really breaks a consumer that keeps chunks (the check above can fail)', async () => {
    const data = randomBytes(10_000);
    const kept: Buffer[] = [];
    for await (const c of reusing(data, [1000])) kept.push(c);
    expect(Buffer.concat(kept).equals(data)).toBe(false);
  });

  it('an uncompressed stream is passed on as it is, and said to reuse its chunks', async () => {
    const data = randomBytes(300_000);
    const d = await decompressing(reusing(data, [65_536, 7]), { sourceReusesChunks: true });
    expect(d.compression).toBeNull();
    expect(d.reusesChunks).toBe(true);
    expect(sha(await collect(d.stream))).toBe(sha(data));
  });

  it('gzip (a zlib stream that queues its input) gets copies: the output is right', async () => {
    const data = Buffer.concat([randomBytes(2_000_000), Buffer.alloc(1_000_000)]);
    const d = await decompressing(reusing(gzipSync(data), [65_536, 333, 1]), { sourceReusesChunks: true });
    expect(d.compression).toBe('gzip');
    expect(sha(await collect(d.stream))).toBe(sha(data));
  });

  it('xz (a pipe to a subprocess, which queues writes) gets copies: the output is right', async () => {
    const data = Buffer.concat([randomBytes(1_500_000), Buffer.alloc(500_000, 3)]);
    const packed = execFileSync('xz', ['-c', '-0'], { input: data, maxBuffer: 1 << 26 });
    const d = await decompressing(reusing(packed, [65_536, 4097]), { sourceReusesChunks: true });
    expect(d.compression).toBe('xz');
    expect(sha(await collect(d.stream))).toBe(sha(data));
  });
});
