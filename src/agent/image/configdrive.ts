// Config drives: an ISO-9660 (label config-2) given inline as base64 of its gzip, or as a URL.
// For whole-disk images it goes to a partition labelled config-2 if the image has one, else to a
// new partition over the last 64 MiB of free space (GPT) or a new primary partition (MBR), as IPA.
import { gunzipSync } from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';
import { AgentError } from '../errors.js';
import { diskPartitions, type BlockDevice } from '../hardware/block-devices.js';
import { rescanPartitions } from '../hardware/erase.js';

export const MAX_CONFIGDRIVE_BYTES = 64 * 1024 * 1024;
const TWO_TIB = 2 * 1024 ** 4;

function configDriveError(details: string): AgentError {
  return new AgentError('DeploymentError', `Config drive: ${details}`);
}

/** base64 → (gunzip when gzip) → ISO bytes; bytes that are not base64 are taken as they are (URL downloads). */
export function decodeConfigDrive(data: Buffer | string): Buffer {
  const text = typeof data === 'string' ? data : data.toString('latin1');
  let raw: Buffer;
  if (/^[A-Za-z0-9+/=\s]+$/.test(text.slice(0, 4096)) && text.trim().length % 4 === 0) {
    raw = Buffer.from(text.replace(/\s+/g, ''), 'base64');
  } else {
    raw = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  }
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      raw = gunzipSync(raw, { maxOutputLength: MAX_CONFIGDRIVE_BYTES * 4 });
    } catch (err) {
      throw configDriveError(`cannot gunzip it: ${(err as Error).message}`);
    }
  }
  if (raw.length === 0) throw configDriveError('it is empty');
  return raw;
}

/** The volume label of an ISO-9660 image ("config-2"), or null. */
export function isoVolumeLabel(iso: Buffer): string | null {
  const pvd = 16 * 2048;
  if (iso.length < pvd + 2048) return null;
  if (iso[pvd] !== 1 || iso.subarray(pvd + 1, pvd + 6).toString('latin1') !== 'CD001') return null;
  return iso.subarray(pvd + 40, pvd + 72).toString('latin1').trim();
}

async function writeInto(host: Host, device: string, iso: Buffer): Promise<void> {
  const fh = await host.openForWrite(device);
  try {
    let off = 0;
    while (off < iso.length) {
      const { bytesWritten } = await fh.write(iso, off, iso.length - off, off);
      off += bytesWritten;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function partitionTableType(host: Host, disk: string): Promise<'gpt' | 'dos' | null> {
  const res = await host.run('blkid', ['-p', '-o', 'value', '-s', 'PTTYPE', disk], { allowFailure: true, timeoutMs: 30_000 });
  const t = res.stdout.trim();
  return t === 'gpt' ? 'gpt' : t === 'dos' ? 'dos' : null;
}

/** Waits for the kernel to show a partition that was not there before. */
async function newPartition(host: Host, disk: string, before: Set<string>): Promise<string> {
  for (let i = 0; i < 20; i++) {
    await rescanPartitions(host, disk);
    const found = (await diskPartitions(host, disk)).find((p) => !before.has(p.name));
    if (found) return found.name;
    await sleep(250);
  }
  throw configDriveError(`the new partition on ${disk} did not appear`);
}

/** Places the config drive on a disk holding a whole-disk image; returns the partition used. */
export async function writeConfigDriveWholeDisk(host: Host, disk: BlockDevice, iso: Buffer, log: Logger): Promise<string> {
  await host.assertMayDestroy(disk.name);
  await rescanPartitions(host, disk.name);
  const parts = await diskPartitions(host, disk.name);
  const existing = [];
  for (const p of parts) {
    const res = await host.run('blkid', ['-p', '-o', 'value', '-s', 'LABEL', p.name], { allowFailure: true, timeoutMs: 30_000 });
    if (res.stdout.trim().toLowerCase() === 'config-2') existing.push(p);
  }
  if (existing[0]) {
    const target = existing[0];
    if (iso.length > target.size) throw configDriveError(`it is ${iso.length} bytes but the image's config-2 partition ${target.name} has ${target.size}`);
    log.info({ partition: target.name }, 'writing the config drive into the existing config-2 partition');
    await writeInto(host, target.name, iso);
    return target.name;
  }
  if (iso.length > MAX_CONFIGDRIVE_BYTES) throw configDriveError(`it is ${iso.length} bytes; at most ${MAX_CONFIGDRIVE_BYTES} fit a new partition`);
  const before = new Set(parts.map((p) => p.name));
  const table = await partitionTableType(host, disk.name);
  if (table === 'gpt') {
    // Last 64 MiB of free space, new random PARTUUID; the name helps humans, the label is the ISO's.
    await host.run('sgdisk', ['-n', '0:-64MB:0', '-c', '0:config-2', disk.name], { timeoutMs: 60_000 });
  } else {
    const primaries = parts.filter((p) => {
      const n = /(\d+)$/.exec(p.name);
      return n && Number(n[1]) <= 4;
    });
    if (primaries.length >= 4) throw configDriveError(`${disk.name} has an MBR with 4 primary partitions: no room for one more`);
    const end = Math.min(disk.size, TWO_TIB);
    const mib = (b: number) => `${Math.floor(b / 2 ** 20)}MiB`;
    const args = table === 'dos' ? [] : ['mklabel', 'msdos'];
    await host.run('parted', ['-s', '-a', 'optimal', disk.name, '--', ...args, 'mkpart', 'primary', 'fat32', mib(end - MAX_CONFIGDRIVE_BYTES), end === disk.size ? '-0' : mib(end)], { timeoutMs: 60_000 });
  }
  const part = await newPartition(host, disk.name, before);
  log.info({ partition: part, table }, 'created a partition for the config drive');
  await writeInto(host, part, iso);
  return part;
}
