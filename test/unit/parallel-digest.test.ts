// The worker-thread digest must equal a plain one whatever the mix of copied chunks (update) and
// shared buffers hashed in place (updateShared), in the order they were given.
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { inlineDigest, parallelDigest } from '../../src/agent/image/parallel-digest.js';
import { allocateShared } from '../../src/agent/image/shared-memory.js';

function shared(bytes: Buffer): Buffer {
  const b = allocateShared(bytes.length + 100).subarray(37, 37 + bytes.length); // not at the start of its memory
  bytes.copy(b);
  return b;
}

describe('parallel digest', () => {
  it('equals sha256 of the whole for any mix of update() and updateShared(), large and small', async () => {
    const parts = [randomBytes(10), randomBytes(5 << 20), randomBytes(3 << 20), randomBytes(1), randomBytes(4 << 20), randomBytes(70_000)];
    for (const make of [parallelDigest, inlineDigest]) {
      const d = make('sha256');
      const pending: Array<Promise<void>> = [];
      for (const [i, p] of parts.entries()) {
        if (i % 2 === 1) pending.push(d.updateShared(shared(p)));
        else {
          const w = d.update(p);
          if (w) await w;
        }
      }
      await Promise.all(pending);
      expect(await d.digest()).toBe(createHash('sha256').update(Buffer.concat(parts)).digest('hex'));
    }
  });

  it('hashes only the bytes of a view, across the switch from copied messages to slots', async () => {
    const backing = randomBytes(8 << 20);
    // 64 KiB views into a bigger buffer, as network chunks are: 48 of them pass the first-MiB limit.
    const chunks = Array.from({ length: 48 }, (_, i) => backing.subarray(i * 70_000 + 3, i * 70_000 + 3 + 65_536));
    const d = parallelDigest('sha256');
    for (const c of chunks) {
      const w = d.update(c);
      if (w) await w;
    }
    const tail = shared(randomBytes(1 << 20));
    await d.updateShared(tail);
    expect(await d.digest()).toBe(createHash('sha256').update(Buffer.concat([...chunks, tail])).digest('hex'));
  });

  it('updateShared of ordinary memory still hashes (copied through the slots)', async () => {
    const data = randomBytes(9 << 20);
    const d = parallelDigest('sha512');
    await d.updateShared(data);
    expect(await d.digest()).toBe(createHash('sha512').update(data).digest('hex'));
  });

  it('close() ends the hashing thread of a digest that is never finished', async () => {
    const d = parallelDigest('sha256');
    const exited = new Promise<number>((resolve) => d.thread!.once('exit', resolve));
    await d.updateShared(shared(randomBytes(1 << 20)));
    d.close();
    await expect(exited).resolves.toBeTypeOf('number');
    d.close(); // again: nothing left to end, no error
  });

  it('close() after digest() changes nothing', async () => {
    const d = parallelDigest('sha256');
    const data = randomBytes(3 << 20);
    const w = d.update(data);
    if (w) await w;
    expect(await d.digest()).toBe(createHash('sha256').update(data).digest('hex'));
    expect(() => d.close()).not.toThrow();
  });
});
