// What a test's device holds, read back for assertions: raw bytes, and blkid's low-level probe.
import { closeSync, openSync, readSync } from 'node:fs';
import { sh } from './loop-device.js';

/** `length` bytes of `path` from `offset` (fewer at its end). */
export function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, buf, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return buf.subarray(0, done);
  } finally {
    closeSync(fd);
  }
}

/** blkid's low-level probe of one device: exactly what is on it, no cache. */
export async function blkidTags(dev: string): Promise<Record<string, string>> {
  const res = await sh('blkid', ['-p', '-o', 'export', dev]);
  const tags: Record<string, string> = {};
  for (const line of res.stdout.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) tags[line.slice(0, i)] = line.slice(i + 1);
  }
  return tags;
}
