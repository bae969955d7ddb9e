// Regression: qcow2 host offsets at or above 2^31 (any image file larger than 2 GiB). JavaScript's
// bitwise operators work on signed 32-bit integers, so masking the low word of an L2 entry once
// turned such offsets negative and the reader refused valid images as "points into the header".
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readQcow2 } from '../../src/agent/image/qcow2-reader.js';
import type { SpillArea } from '../../src/agent/image/write-ops.js';

const GiB = 2 ** 30;
const noSpill: SpillArea = {
  used: 0,
  write: async () => {
    throw new Error('nothing should be spilled');
  },
  read: async () => {
    throw new Error('nothing was spilled');
  },
};

describe('qcow2 with host offsets beyond 2 GiB', () => {
  let dir = '';
  let image = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferrum-qcow2-big-'));
    image = join(dir, 'big.qcow2');
    // preallocation=metadata maps every cluster in guest order: the last ones live past 2^31 in the file.
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata,cluster_size=65536', image, `${2.25 * GiB}`]);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 0xab ${2.25 * GiB - 131072} 131072`, '-c', `write -P 0xcd ${2 * GiB} 65536`, image], { stdio: 'ignore' });
  }, 60_000);
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('maps the clusters stored past 2^31 to their guest offsets', async () => {
    const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', image], { encoding: 'utf8' })) as Array<{ start: number; offset?: number }>;
    expect(map.some((e) => (e.offset ?? 0) >= 2 ** 31)).toBe(true);
    const seen = new Map<number, number>();
    for await (const op of readQcow2(createReadStream(image, { highWaterMark: 1 << 20 }), { spill: noSpill })) {
      if (op.kind !== 'data') continue;
      for (let i = 0; i < op.data.length; i += 65536) seen.set(op.offset + i, op.data[i]!);
      op.release?.();
    }
    expect(seen.get(2 * GiB)).toBe(0xcd);
    expect(seen.get(2.25 * GiB - 131072)).toBe(0xab);
    expect(seen.get(2.25 * GiB - 65536)).toBe(0xab);
  }, 120_000);
});
