// Finding the partitions install_bootloader works on, as IPA does: the root (or ESP, or PReP)
// partition by filesystem UUID, PARTUUID or label among the install device's partitions (lsblk),
// then blkid over the devices the agent may touch; software RAID (md) devices and their holder
// disks; partition numbers and parent disks from sysfs; the ESP by the partition table's flags.
import { posix } from 'node:path';
import { errors } from '../errors.js';
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';

export interface LsblkPairsRow {
  [column: string]: string;
}

/** Parses `lsblk -P` output (KEY="value" pairs, \xHH escapes) into one record per line. */
export function parseLsblkPairs(text: string): LsblkPairsRow[] {
  const rows: LsblkPairsRow[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const row: LsblkPairsRow = {};
    const re = /([A-Z0-9:_-]+)="((?:[^"\\]|\\.)*)"/g;
    for (let m = re.exec(line); m; m = re.exec(line)) {
      row[m[1]!] = m[2]!.replace(/\\x([0-9a-fA-F]{2})/g, (_s, hex: string) => String.fromCharCode(parseInt(hex, 16))).replace(/\\(.)/g, '$1');
    }
    if (Object.keys(row).length > 0) rows.push(row);
  }
  return rows;
}

const sameId = (a: string | undefined, b: string) => a !== undefined && a !== '' && a.toLowerCase() === b.toLowerCase();

/**
 * The /dev path of the partition (or md device) of `rows` carrying `uuid` as filesystem UUID,
 * PARTUUID or filesystem label, or null. Whole disks are ignored, as IPA.
 */
export function matchPartition(rows: LsblkPairsRow[], uuid: string): string | null {
  for (const row of rows) {
    const type = row['TYPE'] ?? '';
    if (type !== 'part' && type !== 'md' && !type.startsWith('raid')) continue;
    if (sameId(row['UUID'], uuid) || sameId(row['PARTUUID'], uuid) || sameId(row['LABEL'], uuid)) return `/dev/${row['KNAME']}`;
  }
  return null;
}

/** Re-reads a device's partition table into the kernel (partx -u keeps existing nodes) and waits for udev. */
export async function rescanDevice(host: Host, device: string, log: Logger): Promise<void> {
  const res = await host.run('partx', ['-u', device], { allowFailure: true, timeoutMs: 60_000 });
  if (res.exitCode !== 0) log.warn({ device, stderr: res.stderr.trim() }, `could not re-read the partition table of ${device}`);
  await udevSettle(host);
}

export async function udevSettle(host: Host): Promise<void> {
  if (await host.hasCommand('udevadm')) await host.run('udevadm', ['settle', '--timeout=30'], { allowFailure: true, timeoutMs: 40_000 });
}

/** `blkid -p -o export` output (KEY=value lines). */
export function parseBlkidExport(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}

/**
 * lsblk rows of a device and its partitions. lsblk takes file system and partition UUIDs from the
 * udev database; where it has none (no udev, or not processed yet), blkid probes the device.
 */
export async function lsblkRows(host: Host, device: string): Promise<LsblkPairsRow[]> {
  const { stdout } = await host.run('lsblk', ['-PbioKNAME,UUID,PARTUUID,TYPE,LABEL,FSTYPE,PARTTYPE', device], { timeoutMs: 30_000 });
  const rows = parseLsblkPairs(stdout);
  for (const row of rows) {
    if (row['UUID'] || row['PARTUUID'] || !row['KNAME']) continue;
    const res = await host.run('blkid', ['-p', '-o', 'export', `/dev/${row['KNAME']}`], { allowFailure: true, timeoutMs: 30_000 });
    const p = parseBlkidExport(res.stdout);
    row['UUID'] = p['UUID'] ?? '';
    row['PARTUUID'] = p['PART_ENTRY_UUID'] ?? '';
    row['LABEL'] = row['LABEL'] || (p['LABEL'] ?? '');
    row['FSTYPE'] = row['FSTYPE'] || (p['TYPE'] ?? '');
    row['PARTTYPE'] = row['PARTTYPE'] || (p['PART_ENTRY_TYPE'] ?? '');
  }
  return rows;
}

/** True when `device` is a Linux software RAID (md) device. */
export async function isMdDevice(host: Host, device: string): Promise<boolean> {
  const name = posix.basename(await host.realpath(device).catch(() => device));
  return /^md/.test(name) && (await host.exists(`/sys/class/block/${name}/md`));
}

/** The kernel name of a device path, resolving /dev/md/name style links. */
export async function kernelName(host: Host, device: string): Promise<string> {
  return posix.basename(await host.realpath(device).catch(() => device));
}

/** Partition number of a partition (sysfs), or null for a whole device. */
export async function partitionNumber(host: Host, partition: string): Promise<number | null> {
  const name = await kernelName(host, partition);
  const text = (await host.readTextOrNull(`/sys/class/block/${name}/partition`))?.trim();
  return text && /^\d+$/.test(text) ? Number(text) : null;
}

/** /dev path of the disk a partition belongs to (the device itself when it is not a partition). */
export async function parentDisk(host: Host, partition: string): Promise<string> {
  const name = await kernelName(host, partition);
  if ((await partitionNumber(host, partition)) === null) return `/dev/${name}`;
  const sys = await host.realpath(`/sys/class/block/${name}`);
  return `/dev/${posix.basename(posix.dirname(sys))}`;
}

/** /dev paths of the md arrays the kernel knows (/sys/block/md* with an md/ directory). */
export async function mdArrays(host: Host): Promise<string[]> {
  const arrays: string[] = [];
  for (const name of await host.readdir('/sys/block').catch(() => [] as string[])) {
    if (/^md/.test(name) && (await host.exists(`/sys/block/${name}/md`))) arrays.push(`/dev/${name}`);
  }
  return arrays;
}

/** The member devices (usually partitions) of an md device. */
export async function mdComponents(host: Host, md: string): Promise<string[]> {
  const name = await kernelName(host, md);
  return (await host.readdir(`/sys/block/${name}/slaves`)).map((s) => `/dev/${s}`);
}

/** The disks holding an md device's members (IPA's holder disks), in member order, without repeats. */
export async function mdHolderDisks(host: Host, md: string): Promise<string[]> {
  const disks: string[] = [];
  for (const member of await mdComponents(host, md)) {
    const disk = await parentDisk(host, member);
    if (!disks.includes(disk)) disks.push(disk);
  }
  return disks;
}

/**
 * Finds the partition with `uuid` on `device`, as IPA's get_partition: lsblk on the device, then
 * blkid by UUID and PARTUUID (only devices the agent may touch count), then for an md device its
 * first partition. DeviceNotFound when nothing matches.
 */
export async function findPartition(host: Host, device: string, uuid: string, log: Logger): Promise<string> {
  await rescanDevice(host, device, log);
  const rows = await lsblkRows(host, device);
  const found = matchPartition(rows, uuid);
  if (found) {
    log.debug({ uuid, device, partition: found }, `partition ${uuid} found on ${device}`);
    return found;
  }
  for (const tag of ['UUID', 'PARTUUID']) {
    const res = await host.run('blkid', ['-o', 'device', '-t', `${tag}=${uuid}`], { allowFailure: true, timeoutMs: 30_000 });
    for (const candidate of res.stdout.split('\n').map((l) => l.trim()).filter(Boolean)) {
      if (await mayTouch(host, candidate)) {
        log.debug({ uuid, partition: candidate, tag }, `partition ${uuid} found by blkid`);
        return candidate;
      }
      log.warn({ uuid, candidate }, `${candidate} carries ${tag} ${uuid} but is not a device the agent may touch`);
    }
  }
  if (await isMdDevice(host, device)) {
    const mdPart = `${device}p1`;
    if (await host.exists(mdPart)) {
      log.debug({ device, partition: mdPart }, `assuming the first partition of md device ${device} holds the root file system`);
      return mdPart;
    }
  }
  throw errors.deviceNotFound(`No partition with UUID ${uuid} found on device ${device}`);
}

async function mayTouch(host: Host, device: string): Promise<boolean> {
  try {
    await host.assertMayDestroy(device);
    return true;
  } catch {
    return false;
  }
}

export interface PartedPartition {
  number: number;
  fstype: string;
  name: string;
  flags: string[];
}

export interface PartedTable {
  label: string | null;
  partitions: PartedPartition[];
}

/** Parses `parted -s -m <dev> print`: the disk line names the label, then one line per partition. */
export function parsePartedMachine(text: string): PartedTable {
  const table: PartedTable = { label: null, partitions: [] };
  for (const raw of text.split('\n')) {
    const line = raw.trim().replace(/;$/, '');
    if (!line || line === 'BYT' || line === 'CHS' || line === 'CYL') continue;
    const f = line.split(':');
    if (f[0]?.startsWith('/')) {
      table.label = f[5] ?? null;
      continue;
    }
    if (!/^\d+$/.test(f[0] ?? '')) continue;
    table.partitions.push({
      number: Number(f[0]),
      fstype: f[4] ?? '',
      name: f[5] ?? '',
      flags: (f[6] ?? '')
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean),
    });
  }
  return table;
}

export async function partedTable(host: Host, device: string): Promise<PartedTable | null> {
  const res = await host.run('parted', [device, '-s', '-m', '--', 'print'], { allowFailure: true, timeoutMs: 60_000 });
  return res.exitCode === 0 ? parsePartedMachine(res.stdout) : null;
}

/** The EFI system partition's number on a partition table (ironic-lib: `esp` flag, or `boot` on GPT). */
export function findEfiPartitionNumber(table: PartedTable | null): number | null {
  if (!table) return null;
  const gpt = table.label === 'gpt';
  const esp = table.partitions.find((p) => p.flags.includes('esp') || (gpt && p.flags.includes('boot')));
  return esp?.number ?? null;
}

/** The /dev path of partition number `n` of `disk` (sysfs), or null. */
export async function partitionPath(host: Host, disk: string, n: number): Promise<string | null> {
  const name = await kernelName(host, disk);
  for (const child of await host.readdir(`/sys/block/${name}`)) {
    if (!child.startsWith(name)) continue;
    const text = (await host.readTextOrNull(`/sys/block/${name}/${child}/partition`))?.trim();
    if (text === String(n)) return `/dev/${child}`;
  }
  return null;
}
