import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { allocateShared, copyIntoShared } from '../../src/agent/image/shared-memory.js';

describe('copyIntoShared', () => {
  it('copies exactly what Buffer#copy copies, for every range and room left', () => {
    const source = randomBytes(1000);
    const cases: [number, number, number][] = [
      [0, 0, 1000], // all of it
      [10, 100, 600], // a middle piece
      [900, 0, 1000], // more than fits: truncated at the target's end
      [1024, 0, 10], // no room at all
      [5, 300, 300], // empty range
      [0, 999, 1000], // one byte
    ];
    for (const [targetStart, from, to] of cases) {
      const expected = Buffer.alloc(1024, 0xee);
      const expectedN = source.copy(expected, targetStart, from, to);
      const target = allocateShared(1024).fill(0xee);
      const n = copyIntoShared(source, target, targetStart, from, to);
      expect(n, `case ${targetStart},${from},${to}`).toBe(expectedN);
      expect(target.equals(expected), `case ${targetStart},${from},${to}`).toBe(true);
    }
  });

  it('defaults to the whole source', () => {
    const source = randomBytes(64);
    const target = allocateShared(128);
    expect(copyIntoShared(source, target, 32)).toBe(64);
    expect(target.subarray(32, 96).equals(source)).toBe(true);
    expect(target.subarray(0, 32).every((b) => b === 0)).toBe(true);
    expect(target.subarray(96).every((b) => b === 0)).toBe(true);
  });
});
