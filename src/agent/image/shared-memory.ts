// Shared memory for the image pipeline: the pool and hash-slot buffers that a hash worker reads
// where they are, and the one way bytes are copied into them.

/** `size` bytes of shared memory: a hash worker can read them where they are (no copy). */
export function allocateShared(size: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(size));
}

/**
 * Copies `source[sourceStart, sourceEnd)` into `target` at `targetStart`, as much as fits, and
 * returns the number of bytes copied (as Buffer#copy).
 *
 * Why not Buffer#copy: V8 copies into a SharedArrayBuffer with relaxed-atomic word stores, which
 * cannot use the CPU's fast string copy; into pool buffers that have gone cold that cost 1.1–1.3 s
 * per 2 GiB on the main thread (the bench's machine), against ~0.22 s for `fill`, which Node does
 * with memcpy. A fill whose value is exactly as long as its range is one copy of the value.
 */
export function copyIntoShared(source: Buffer, target: Buffer, targetStart: number, sourceStart = 0, sourceEnd = source.length): number {
  const n = Math.min(sourceEnd - sourceStart, target.length - targetStart);
  if (n <= 0) return 0;
  target.fill(source.subarray(sourceStart, sourceStart + n), targetStart, targetStart + n);
  return n;
}
