// The device writer on a real loop device with O_DIRECT: pieces of any size (as a qcow2 reader cuts
// network chunks) are gathered into aligned buffers and go around the page cache; gaps, zero ranges
// and an unaligned tail still land byte-exact.
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLoopDevice, type LoopDevice } from '../helpers/loop-device.js';
import { gate, type Gate } from '../helpers/gate.js';
import { holePuncher } from '../../src/agent/image/zero-out.js';
import { LocalHost } from '../../src/agent/host/host.js';
import { silentLogger } from '../../src/agent/log.js';
import { destroyLoop, readAt } from './support.js';
import { DeviceWriter, MAX_WRITE, type DeviceZeroing } from '../../src/agent/image/device-writer.js';
import type { ByteRange, HolePuncher, WriteOp } from '../../src/agent/image/write-ops.js';

const MIB = 1024 * 1024;
let disk: LoopDevice;

beforeAll(async () => {
  disk = await createLoopDevice(64);
});
afterAll(async () => {
  await destroyLoop(disk);
});

const localHost = () => new LocalHost({ sysRoot: '/', devices: [disk.path], power: 'none', log: silentLogger() });

/**
 * The real hole puncher (blkdiscard on the loop device), recording what it is handed and when each
 * discard is done; ranges from `refuseFrom` on are refused, as a device that cannot take them.
 */
function recordingPuncher(refuseFrom = Infinity): HolePuncher & { handed: Array<[number, number]>; done: ByteRange[]; closed: boolean } {
  const real = holePuncher(localHost(), disk.path);
  const p = {
    handed: [] as Array<[number, number]>,
    done: [] as ByteRange[],
    closed: false,
    async discard(r: ByteRange): Promise<boolean> {
      p.handed.push([r.offset, r.length]);
      const ok = r.offset < refuseFrom ? await real.discard(r) : false;
      p.done.push(r);
      return ok;
    },
    async close(): Promise<void> {
      p.closed = true;
      await real.close();
    },
  };
  return p;
}

/** `fh` as a slow disk: each write starts `ms` late (the real write, later), so it is still in flight when the next op comes. */
function slowWrites(fh: FileHandle, ms: number): FileHandle {
  return new Proxy(fh, {
    get(target, key) {
      if (key === 'write') {
        return async (...args: Parameters<FileHandle['write']>) => {
          await new Promise((r) => setTimeout(r, ms));
          return (target.write as (...a: unknown[]) => unknown)(...args);
        };
      }
      const v = Reflect.get(target, key) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

async function writeOps(ops: WriteOp[], preZeroed: boolean, discard: HolePuncher | null = null): Promise<DeviceWriter> {
  const fh = await open(disk.path, 'r+');
  const direct = await open(disk.path, constants.O_RDWR | constants.O_DIRECT);
  try {
    const writer = new DeviceWriter(fh, { deviceName: disk.path, deviceSize: 64 * MIB, preZeroed, direct, discard });
    for (const op of ops) await writer.apply(op);
    await writer.finish();
    return writer;
  } finally {
    await fh.close();
    await direct.close();
  }
}

/** `bytes` cut into views of odd sizes, each a fresh buffer as network chunks are. */
function pieces(bytes: Buffer, offset: number): WriteOp[] {
  const ops: WriteOp[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = Math.min(bytes.length - at, [65_392, 1_000, 7, 131_072, 65_536][i % 5]!);
    ops.push({ kind: 'data', offset: offset + at, data: Buffer.from(bytes.subarray(at, at + n)) });
    at += n;
  }
  return ops;
}

describe('device writer', () => {
  it('gathers odd-sized contiguous pieces into direct writes, byte-exact', async () => {
    const a = randomBytes(9 * MIB + 12_345); // ends unaligned: the tail goes through the page cache
    const b = randomBytes(3 * MIB);
    // Stale data where the zero range will go: it must read back as zeros.
    await writeOps([{ kind: 'data', offset: 40 * MIB, data: randomBytes(MIB) }], false);
    const writer = await writeOps([...pieces(a, 0), { kind: 'zero', offset: 40 * MIB, length: MIB }, ...pieces(b, 20 * MIB + 4096)], false);

    expect(readAt(disk.path, 0, a.length).equals(a)).toBe(true);
    expect(readAt(disk.path, 20 * MIB + 4096, b.length).equals(b)).toBe(true);
    expect(readAt(disk.path, 40 * MIB, MIB).equals(Buffer.alloc(MIB))).toBe(true);
    expect(writer.bytesWritten).toBe(a.length + b.length + MIB);
    // All but the unaligned tail of `a` went around the page cache in gathered MAX_WRITE buffers.
    expect(writer.bytesDirect).toBeGreaterThanOrEqual(a.length - MAX_WRITE + b.length);
    expect(writer.bytesDirect).toBeLessThan(writer.bytesWritten);
  });

  it('is done with a transient op\'s memory when apply() returns, even where it cannot gather it', async () => {
    // Unaligned offsets start no gathered run: those ops are written from their own memory.
    const parts = [randomBytes(1000), randomBytes(70_000), randomBytes(5 * MIB + 17)];
    const offsets = [3 * MIB + 512, 7 * MIB + 1536, 11 * MIB + 100];
    const fh = await open(disk.path, 'r+');
    const direct = await open(disk.path, constants.O_RDWR | constants.O_DIRECT);
    try {
      const writer = new DeviceWriter(fh, { deviceName: disk.path, deviceSize: 64 * MIB, preZeroed: false, direct });
      for (const [i, data] of parts.entries()) {
        const memory = Buffer.from(data);
        await writer.apply({ kind: 'data', offset: offsets[i]!, data: memory, transient: true });
        memory.fill(0xa5); // the reader fills the memory again at once
      }
      await writer.finish();
    } finally {
      await fh.close();
      await direct.close();
    }
    for (const [i, data] of parts.entries()) expect(readAt(disk.path, offsets[i]!, data.length).equals(data), `part ${i}`).toBe(true);
  });

  it('on a pre-zeroed device skips the zero blocks of gathered pieces and writes the rest', async () => {
    await writeOps([{ kind: 'zero', offset: 0, length: 8 * MIB }], false);
    const img = Buffer.alloc(8 * MIB);
    randomBytes(MIB).copy(img, 2 * MIB); // one MiB of data in 8
    randomBytes(4096).copy(img, 7 * MIB);
    const writer = await writeOps(pieces(img, 0), true);
    expect(readAt(disk.path, 0, img.length).equals(img)).toBe(true);
    expect(writer.bytesSkipped).toBeGreaterThanOrEqual(6 * MIB);
    expect(writer.bytesWritten + writer.bytesSkipped).toBe(img.length);
  });

  it('punches holes for long zero runs (real blkdiscard), writes short ones, and writes zeros where a discard is refused', async () => {
    const stale = randomBytes(32 * MIB);
    await writeOps([{ kind: 'data', offset: 0, data: stale }], false);
    const img = Buffer.alloc(32 * MIB);
    randomBytes(MIB).copy(img, 0);
    randomBytes(MIB).copy(img, 5 * MIB); // 4 MiB zero run before it: discarded
    randomBytes(MIB).copy(img, 6 * MIB + 256 * 1024); // 256 KiB zero run: written
    randomBytes(MIB).copy(img, 20 * MIB);
    const puncher = recordingPuncher(16 * MIB); // the device refuses the ranges from 16 MiB on: their zeros are written
    const ops = [...pieces(img.subarray(0, 16 * MIB), 0), { kind: 'zero' as const, offset: 16 * MIB, length: 4 * MIB }, ...pieces(img.subarray(20 * MIB), 20 * MIB)];
    const writer = await writeOps(ops, false, puncher);

    expect(readAt(disk.path, 0, img.length).equals(img)).toBe(true);
    // Each run handed over as it ended; the 256 KiB run was written, not discarded.
    expect(puncher.handed).toEqual([
      [MIB, 4 * MIB],
      [7 * MIB + 256 * 1024, 16 * MIB - (7 * MIB + 256 * 1024) + 4 * MIB], // continues into the zero op
      [21 * MIB, 11 * MIB],
    ]);
    expect(puncher.closed).toBe(true);
    expect(writer.bytesSkipped).toBe(4 * MIB + 20 * MIB - (7 * MIB + 256 * 1024)); // the refused run (from 21 MiB) was written
    expect(writer.bytesWritten + writer.bytesSkipped).toBe(img.length);
  });

  it('punches holes while the image streams, and orders them against writes to the same range', async () => {
    await writeOps([{ kind: 'data', offset: 0, data: randomBytes(48 * MIB) }], false);
    const a = randomBytes(2 * MIB);
    const b = randomBytes(MIB);
    const c = randomBytes(3 * MIB);
    const puncher = recordingPuncher();
    const fh = await open(disk.path, 'r+');
    const direct = await open(disk.path, constants.O_RDWR | constants.O_DIRECT);
    let doneBeforeFinish: number;
    try {
      const writer = new DeviceWriter(slowWrites(fh, 200), { deviceName: disk.path, deviceSize: 64 * MIB, preZeroed: false, direct: slowWrites(direct, 200), discard: puncher });
      await writer.apply({ kind: 'data', offset: 0, data: a });
      await writer.apply({ kind: 'zero', offset: 2 * MIB, length: 8 * MIB }); // run 1
      await writer.apply({ kind: 'data', offset: 10 * MIB, data: b });
      // Data then zeros for the same range (its write may still be in flight): zeros win.
      await writer.apply({ kind: 'data', offset: 12 * MIB, data: randomBytes(4 * MIB) });
      await writer.apply({ kind: 'zero', offset: 11 * MIB, length: 9 * MIB }); // run 2
      await writer.apply({ kind: 'data', offset: 20 * MIB, data: b });
      // Zeros then data inside them (a qcow2 cluster revisited): data wins.
      await writer.apply({ kind: 'zero', offset: 21 * MIB, length: 20 * MIB }); // run 3
      await writer.apply({ kind: 'data', offset: 30 * MIB, data: c });
      await writer.apply({ kind: 'data', offset: 41 * MIB, data: b });
      // Runs 1 and 2 were handed over (and run 3, which data came for) before the end of the image.
      await new Promise((r) => setTimeout(r, 600));
      doneBeforeFinish = puncher.done.length;
      await writer.finish();
      expect(writer.bytesSkipped).toBe((8 + 9 + 20) * MIB);
    } finally {
      await fh.close();
      await direct.close();
    }
    expect(puncher.handed).toEqual([
      [2 * MIB, 8 * MIB],
      [11 * MIB, 9 * MIB],
      [21 * MIB, 20 * MIB],
    ]);
    expect(doneBeforeFinish).toBe(3);
    const want = Buffer.alloc(42 * MIB);
    a.copy(want, 0);
    b.copy(want, 10 * MIB);
    b.copy(want, 20 * MIB);
    c.copy(want, 30 * MIB);
    b.copy(want, 41 * MIB);
    expect(readAt(disk.path, 0, want.length).equals(want)).toBe(true);
  });

  it('refuses nothing silently when the discarding shell is gone: the zeros are written', async () => {
    await writeOps([{ kind: 'data', offset: 0, data: randomBytes(16 * MIB) }], false);
    // A device name blkdiscard cannot open: every range is refused.
    const puncher = holePuncher(localHost(), '/dev/ferrum-no-such-device');
    const img = Buffer.alloc(16 * MIB);
    randomBytes(MIB).copy(img, 0);
    randomBytes(MIB).copy(img, 15 * MIB);
    const writer = await writeOps(pieces(img, 0), false, puncher);
    expect(writer.bytesSkipped).toBe(0);
    expect(readAt(disk.path, 0, img.length).equals(img)).toBe(true);
    // Closed by the writer: a range handed over now is refused at once.
    expect(await puncher.discard({ offset: 0, length: MIB })).toBe(false);
  });

  describe('while the device is still being prepared', () => {
    /** A preparation the test ends: resolve() with how the device takes zeros, or reject(). */
    const preparation = () => gate<DeviceZeroing>();

    /** A pool buffer of `writer` holding `bytes`, as the raw reader hands it over; counts its release. */
    async function pooledOp(writer: DeviceWriter, offset: number, bytes: Buffer, released: Set<number>): Promise<WriteOp> {
      const buf = await writer.pool.acquire();
      bytes.copy(buf);
      return { kind: 'data', offset, data: buf.subarray(0, bytes.length), pooled: true, release: () => (released.add(offset), writer.pool.release(buf)) };
    }

    it('touches nothing until then, gives zero buffers back at once, holds data, and writes it all after', async () => {
      const stale = randomBytes(20 * MIB);
      await writeOps([{ kind: 'data', offset: 0, data: stale }], false);
      const a = randomBytes(MAX_WRITE);
      const c = randomBytes(MAX_WRITE);
      const prep = preparation();
      const released = new Set<number>();
      const fh = await open(disk.path, 'r+');
      const direct = await open(disk.path, constants.O_RDWR | constants.O_DIRECT);
      try {
        const writer = new DeviceWriter(fh, { deviceName: disk.path, deviceSize: 64 * MIB, preZeroed: false, direct, prepared: prep.promise });
        // Each apply() returns while the preparation is pending (a wait here would time the test out).
        await writer.apply(await pooledOp(writer, 0, a, released));
        await writer.apply(await pooledOp(writer, MAX_WRITE, Buffer.alloc(MAX_WRITE), released));
        await writer.apply({ kind: 'size', virtualSize: 20 * MIB });
        await writer.apply(await pooledOp(writer, 2 * MAX_WRITE, c, released));
        await writer.apply({ kind: 'zero', offset: 3 * MAX_WRITE, length: 2 * MAX_WRITE });
        expect([...released]).toEqual([MAX_WRITE]); // the zero buffer is back in the pool; the data is held
        await new Promise((r) => setTimeout(r, 100));
        expect(readAt(disk.path, 0, stale.length).equals(stale)).toBe(true); // nothing written yet
        expect(writer.bytesWritten + writer.bytesSkipped).toBe(0);

        prep.resolve({ preZeroed: false, discard: null });
        await writer.finish();
        expect(released).toEqual(new Set([0, MAX_WRITE, 2 * MAX_WRITE]));
        expect(writer.bytesWritten).toBe(5 * MAX_WRITE); // this device does not read zeros: they are written
      } finally {
        await fh.close();
        await direct.close();
      }
      const want = Buffer.alloc(20 * MIB);
      a.copy(want, 0);
      c.copy(want, 2 * MAX_WRITE);
      expect(readAt(disk.path, 0, want.length).equals(want)).toBe(true);
    });

    it('takes the zeroing the preparation found: zero ranges of a device zeroed out are skipped', async () => {
      await writeOps([{ kind: 'zero', offset: 0, length: 16 * MIB }], false);
      const a = randomBytes(MAX_WRITE);
      const prep = preparation();
      const fh = await open(disk.path, 'r+');
      try {
        const writer = new DeviceWriter(fh, { deviceName: disk.path, deviceSize: 64 * MIB, preZeroed: false, direct: null, prepared: prep.promise });
        const released = new Set<number>();
        await writer.apply(await pooledOp(writer, 0, Buffer.alloc(MAX_WRITE), released));
        await writer.apply(await pooledOp(writer, MAX_WRITE, a, released));
        prep.resolve({ preZeroed: true, discard: null });
        // An op that is not a pool buffer waits for the held ones; order is kept.
        await writer.apply({ kind: 'data', offset: 2 * MAX_WRITE, data: Buffer.alloc(MAX_WRITE) });
        await writer.finish();
        expect(writer.bytesSkipped).toBe(2 * MAX_WRITE);
        expect(writer.bytesWritten).toBe(MAX_WRITE);
      } finally {
        await fh.close();
      }
      expect(readAt(disk.path, MAX_WRITE, MAX_WRITE).equals(a)).toBe(true);
    });

    /**
     * Stale data on the disk, a writer holding one pool buffer while the device is prepared, and
     * `body` run with both: afterwards the disk still holds the stale data (nothing was written).
     */
    async function writesNothing(body: (writer: DeviceWriter, prep: Gate<DeviceZeroing>) => Promise<void>): Promise<void> {
      const stale = randomBytes(8 * MIB);
      await writeOps([{ kind: 'data', offset: 0, data: stale }], false);
      const prep = preparation();
      const fh = await open(disk.path, 'r+');
      try {
        const writer = new DeviceWriter(fh, { deviceName: disk.path, deviceSize: 64 * MIB, preZeroed: false, direct: null, prepared: prep.promise });
        await writer.apply(await pooledOp(writer, 0, randomBytes(MAX_WRITE), new Set()));
        await body(writer, prep);
      } finally {
        await fh.close();
      }
      expect(readAt(disk.path, 0, stale.length).equals(stale)).toBe(true);
    }

    it('fails with the preparation\'s error and writes nothing when it fails', async () => {
      await writesNothing(async (writer, prep) => {
        const next = writer.apply({ kind: 'data', offset: MAX_WRITE, data: randomBytes(MAX_WRITE) });
        prep.reject(new Error('wipefs failed'));
        await expect(next).rejects.toThrow('wipefs failed');
        await expect(writer.finish()).rejects.toThrow('wipefs failed');
      });
    });

    it('when given up, waits for the preparation to end and drops what it held', async () => {
      await writesNothing(async (writer, prep) => {
        let drained = false;
        const draining = writer.drain().then(() => (drained = true));
        await new Promise((r) => setTimeout(r, 100));
        expect(drained).toBe(false); // the caller (which wipes the disk next) is held until the preparation ends
        prep.resolve({ preZeroed: false, discard: null });
        await draining;
      });
    });

    it('refuses an image bigger than the device as soon as it says so', async () => {
      const prep = preparation();
      const fh = await open(disk.path, 'r+');
      try {
        const writer = new DeviceWriter(fh, { deviceName: disk.path, deviceSize: 64 * MIB, preZeroed: false, direct: null, prepared: prep.promise });
        await expect(writer.apply({ kind: 'size', virtualSize: 65 * MIB })).rejects.toThrow(/needs 68157440 bytes but the device has 67108864/);
        prep.resolve({ preZeroed: false, discard: null });
      } finally {
        await fh.close();
      }
    });
  });

  it('refuses data beyond the device end before writing it', async () => {
    await expect(writeOps([{ kind: 'data', offset: 64 * MIB - 4096, data: randomBytes(8192) }], false)).rejects.toThrow(/needs 67112960 bytes but the device has 67108864/);
  });
});
