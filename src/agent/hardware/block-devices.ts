// Block devices from `lsblk --json`, limited to what the agent may see (--devices), with partitions.
import { posix } from 'node:path';
import { AgentError } from '../errors.js';
import type { Host } from '../host/host.js';

export interface BlockDevice {
  /** /dev/<kname> */
  name: string;
  kname: string;
  type: string;
  model: string | null;
  vendor: string | null;
  size: number;
  rotational: boolean;
  readOnly: boolean;
  serial: string | null;
  wwn: string | null;
  hctl: string | null;
  tran: string | null;
  uuid: string | null;
  partuuid: string | null;
  fstype: string | null;
  parttype: string | null;
  logicalSectorSize: number | null;
  physicalSectorSize: number | null;
  /** Partitions (and other holders lsblk nests, e.g. md members' arrays). */
  children: BlockDevice[];
}

const COLUMNS = 'KNAME,NAME,MODEL,SIZE,ROTA,TYPE,UUID,PARTUUID,SERIAL,LOG-SEC,PHY-SEC,TRAN,FSTYPE,PARTTYPE,RO,HCTL,WWN,VENDOR';

/** Types IPA treats as installable disks. */
const DISK_TYPES = new Set(['disk', 'raid0', 'raid1', 'raid4', 'raid5', 'raid6', 'raid10', 'md', 'mpath']);
const IGNORED_NAMES = /^(ram|zram|fd|sr)\d*/;

type LsblkRow = Record<string, unknown> & { children?: LsblkRow[] };

function str(v: unknown): string | null {
  if (typeof v !== 'string') return null;
  const t = v.trim();
  return t === '' ? null : t;
}

function num(v: unknown): number | null {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && /^\d+$/.test(v)) return Number(v);
  return null;
}

function bool(v: unknown): boolean {
  return v === true || v === '1' || v === 1;
}

function toDevice(row: LsblkRow): BlockDevice {
  const kname = str(row['kname']) ?? str(row['name']) ?? '';
  return {
    name: `/dev/${kname}`,
    kname,
    type: str(row['type']) ?? 'unknown',
    model: str(row['model']),
    vendor: str(row['vendor']),
    size: num(row['size']) ?? 0,
    rotational: bool(row['rota']),
    readOnly: bool(row['ro']),
    serial: str(row['serial']),
    wwn: str(row['wwn']),
    hctl: str(row['hctl']),
    tran: str(row['tran']),
    uuid: str(row['uuid']),
    partuuid: str(row['partuuid']),
    fstype: str(row['fstype']),
    parttype: str(row['parttype']),
    logicalSectorSize: num(row['log-sec']),
    physicalSectorSize: num(row['phy-sec']),
    children: (row.children ?? []).map(toDevice),
  };
}

/** Parses `lsblk -bia --json -o …` output. */
export function parseLsblk(json: string): BlockDevice[] {
  const doc = JSON.parse(json) as { blockdevices?: LsblkRow[] };
  return (doc.blockdevices ?? []).map(toDevice);
}

/**
 * The disks the agent may work on: with an allow-list exactly those devices (whatever their type,
 * so loop devices work in tests), otherwise every disk-like device IPA would consider.
 */
export interface ListDisksOptions {
  /**
   * Also report RAID arrays and multipath maps that lsblk's JSON tree nests under their member
   * disks (md0 under sda and sdb), once each, as IPA's flat lsblk listing reports them as disks.
   */
  nested?: boolean;
}

const NESTED_DISK_TYPE = /^(raid\d+|mpath)$/;

export async function listDisks(host: Host, opts: ListDisksOptions = {}): Promise<BlockDevice[]> {
  const allow = host.deviceAllowList;
  const args = ['-bia', '--json', '-o', COLUMNS];
  if (allow) {
    const present: string[] = [];
    for (const dev of allow) if (await host.exists(dev)) present.push(dev);
    if (present.length === 0) return [];
    args.push(...present);
  }
  const { stdout } = await host.run('lsblk', args, { timeoutMs: 30_000 });
  const devices = parseLsblk(stdout);
  if (allow) return devices;
  const disks = devices.filter((d) => DISK_TYPES.has(d.type) && d.size > 0 && !IGNORED_NAMES.test(d.kname));
  if (!opts.nested) return disks;
  const seen = new Set(disks.map((d) => d.kname));
  const walk = (list: BlockDevice[]) => {
    for (const d of list) {
      if (NESTED_DISK_TYPE.test(d.type) && d.size > 0 && !seen.has(d.kname)) {
        seen.add(d.kname);
        disks.push(d);
      }
      walk(d.children);
    }
  };
  walk(devices.flatMap((d) => d.children));
  return disks;
}

/** The disk called `name` as lsblk sees it now, if any; md arrays (nested under their members) are found too. */
async function findDisk(host: Host, name: string): Promise<BlockDevice | undefined> {
  return (await listDisks(host, { nested: true })).find((d) => d.name === name);
}

/** The disk called `name` as lsblk sees it now (DeviceNotFound when it is gone). */
export async function diskByName(host: Host, name: string): Promise<BlockDevice> {
  const disk = await findDisk(host, name);
  if (!disk) throw new AgentError('DeviceNotFound', `${name} disappeared`);
  return disk;
}

/** The partitions of `disk` as lsblk lists them now (none when it is gone). */
export async function diskPartitions(host: Host, disk: string): Promise<BlockDevice[]> {
  return (await findDisk(host, disk))?.children.filter((c) => c.type === 'part') ?? [];
}

/** The device and all its partitions, deepest first in reverse name order (the order IPA wipes them). */
export function partitionsThenDisk(disk: BlockDevice): string[] {
  const parts: string[] = [];
  const walk = (d: BlockDevice) => {
    for (const c of d.children) {
      if (c.type === 'part') parts.push(c.name);
      walk(c);
    }
  };
  walk(disk);
  parts.sort((a, b) => (a < b ? 1 : a > b ? -1 : 0));
  return [...new Set(parts), disk.name];
}

export function deviceBasename(path: string): string {
  return posix.basename(path);
}
