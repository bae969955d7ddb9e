// When the agent may pre-zero a disk and skip the image's zero blocks: a discard only where the
// device documents zeros afterwards (NVMe DLFEAT), else an offloaded WRITE ZEROES. Loop devices
// are never pre-zeroed by discard: the writer punches holes for the image's zero runs instead.
// The sysfs trees are shaped as the kernel lays them out; `nvme id-ns` answers in nvme-cli 2.x's
// JSON. The real effect on a loop device is covered by test/integration/image-faults and the bench.
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/agent/log.js';
import { discardZeroesBecause, dlfeatReadsZeroes, punchesHoles, zeroOutIfCheap } from '../../src/agent/image/zero-out.js';
import { FakeHost, ok, fail } from './support/fake-host.js';
import type { RunOptions, RunResult } from '../../src/agent/host/host.js';

const log = silentLogger();

class DiskHost extends FakeHost {
  constructor(files: Record<string, string>, run: (cmd: string, args: readonly string[], opts?: RunOptions) => RunResult) {
    super({ files, run });
  }
  override async hasCommand(cmd: string): Promise<boolean> {
    return ['blkdiscard', 'nvme'].includes(cmd);
  }
  override async assertMayDestroy(): Promise<void> {}
}

const queue = (disk: string, discardMax: number, writeZeroesMax: number) => ({
  [`/sys/class/block/${disk}/queue/discard_max_bytes`]: `${discardMax}\n`,
  [`/sys/class/block/${disk}/queue/write_zeroes_max_bytes`]: `${writeZeroesMax}\n`,
});

describe('NVMe DLFEAT', () => {
  it('reads zeros after deallocation only when bits 2:0 are 001b', () => {
    expect(dlfeatReadsZeroes('{"nsze":1000,"dlfeat":1}')).toBe(true);
    expect(dlfeatReadsZeroes('{"dlfeat":9}')).toBe(true); // bit 3 (deallocate in WRITE ZEROES) set too
    expect(dlfeatReadsZeroes('{"dlfeat":0}')).toBe(false); // not reported
    expect(dlfeatReadsZeroes('{"dlfeat":2}')).toBe(false); // reads 0xFF
    expect(dlfeatReadsZeroes('{}')).toBe(false);
    expect(dlfeatReadsZeroes('not json')).toBe(false);
  });
});

describe('pre-zeroing a target', () => {
  it('zeroes a loop device out when that is offloaded; never discards one up front', async () => {
    const host = new DiskHost(queue('loop3', 4 << 20, 4 << 20), () => ok(''));
    expect(await discardZeroesBecause(host, '/dev/loop3')).toBeNull();
    expect(await zeroOutIfCheap(host, '/dev/loop3', 1 << 30, log)).toBe(true);
    expect(host.commands.map((c) => c.args[0])).toEqual(['--zeroout', '--zeroout']); // the probe, then the span

    // tmpfs-backed: no WRITE ZEROES. Nothing is zeroed first; the writer punches holes for zero runs.
    const tmpfs = new DiskHost(queue('loop4', 4 << 20, 0), () => ok(''));
    expect(await zeroOutIfCheap(tmpfs, '/dev/loop4', 1 << 30, log)).toBe(false);
    expect(tmpfs.commands).toEqual([]);
    expect(await punchesHoles(tmpfs, '/dev/loop4')).toBe(true);
  });

  it('punches holes only in loop devices that take discards', async () => {
    expect(await punchesHoles(new DiskHost(queue('loop5', 0, 0), () => ok('')), '/dev/loop5')).toBe(false); // no hole punching in its file system
    expect(await punchesHoles(new DiskHost(queue('vda', 2 ** 31, 0), () => ok('')), '/dev/vda')).toBe(false);
    expect(await punchesHoles(new DiskHost(queue('nvme0n1', 2 ** 31, 0), () => ok('')), '/dev/nvme0n1')).toBe(false);
  });

  it('discards an NVMe namespace whose DLFEAT promises zeros; one that does not gets the zero-out probe', async () => {
    const zeroing = new DiskHost(queue('nvme0n1', 2 ** 31, 0), (cmd) => (cmd === 'nvme' ? ok('{"nsze":7814037168,"dlfeat":1}') : ok('')));
    expect(await zeroOutIfCheap(zeroing, '/dev/nvme0n1', 1 << 30, log)).toBe(true);
    expect(zeroing.commands.map((c) => c.cmd)).toEqual(['nvme', 'blkdiscard']);
    expect(zeroing.commands[1]!.args).not.toContain('--zeroout');

    // DLFEAT 0 and no WRITE ZEROES support: nothing is skipped, nothing is discarded.
    const plain = new DiskHost(queue('nvme1n1', 2 ** 31, 0), (cmd) => (cmd === 'nvme' ? ok('{"dlfeat":0}') : ok('')));
    expect(await zeroOutIfCheap(plain, '/dev/nvme1n1', 1 << 30, log)).toBe(false);
    expect(plain.commands.map((c) => c.cmd)).toEqual(['nvme']);
  });

  it('falls back to the zero-out probe when the discard itself fails', async () => {
    const host = new DiskHost(queue('nvme2n1', 2 ** 31, 0), (cmd, args) =>
      cmd === 'nvme' ? ok('{"dlfeat":1}') : cmd === 'blkdiscard' && !args.includes('--zeroout') ? fail('BLKDISCARD ioctl failed: Operation not supported') : ok(''),
    );
    expect(await zeroOutIfCheap(host, '/dev/nvme2n1', 1 << 30, log)).toBe(false); // no WRITE ZEROES either
    expect(host.commands.map((c) => c.cmd)).toEqual(['nvme', 'blkdiscard']);
  });

  it('never trusts a discard on other disks (virtio, SATA/SAS): only an offloaded zero-out', async () => {
    const host = new DiskHost(queue('vda', 2 ** 31, 0), () => ok(''));
    expect(await discardZeroesBecause(host, '/dev/vda')).toBeNull();
    expect(await zeroOutIfCheap(host, '/dev/vda', 1 << 30, log)).toBe(false);
    expect(host.commands).toEqual([]);
  });
});
