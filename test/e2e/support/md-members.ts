// Reading software RAID members from the host, in the VM tests' disk files (this host's kernel
// has no md driver): the partition table sfdisk sees, and the md v1 superblock of a member.
import { execFileSync } from 'node:child_process';
import { expect } from 'vitest';
import { readAt } from '../../helpers/device-read.js';

export const MD_MAGIC = 0xa92b4efc;

/** A partition as `sfdisk --json` lists it (in 512-byte sectors). */
export interface SfdiskPartition {
  start: number;
  size: number;
  type: string;
}

/** The partitions of a disk file, whose table must be `label`. */
export function partitionTable(disk: string, label: 'gpt' | 'dos'): SfdiskPartition[] {
  const t = JSON.parse(execFileSync('sfdisk', ['--json', disk], { encoding: 'utf8' })) as { partitiontable: { label: string; partitions: SfdiskPartition[] } };
  expect(t.partitiontable.label).toBe(label);
  return t.partitiontable.partitions;
}

/**
 * Where a member's v1 superblock is, in bytes from the start of the disk: 4 KiB into the partition
 * for metadata 1.2 (what `mdadm --metadata=1` makes); 8–12 KiB before its end, 4 KiB aligned, for
 * metadata 1.0 (the RAID ESP, which firmware must read as plain FAT).
 */
export function mdSuperblockOffset(p: SfdiskPartition, metadata: '1.0' | '1.2'): number {
  if (metadata === '1.2') return p.start * 512 + 4096;
  return Math.floor(((p.start + p.size) * 512 - 8192) / 4096) * 4096;
}

/** The fields of struct mdp_superblock_1 the tests check, read at `offset` of `disk`. */
export function mdSuperblock(disk: string, offset: number) {
  const sb = readAt(disk, offset, 256);
  return {
    magic: sb.readUInt32LE(0),
    major: sb.readUInt32LE(4),
    uuid: sb.subarray(16, 32).toString('hex'),
    level: sb.readInt32LE(72),
    raidDisks: sb.readUInt32LE(92),
    /** Where the array's data starts, in bytes from the start of the member. */
    dataOffset: Number(sb.readBigUInt64LE(128)) * 512,
  };
}
