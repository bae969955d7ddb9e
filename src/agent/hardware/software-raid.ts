// Software RAID (Linux md) as IPA's raid clean steps: create_configuration builds the arrays a
// node's target_raid_config asks for (controller "software") from partitions on its disks;
// delete_configuration stops every array and wipes what made it. The deploy then finds /dev/md0
// as the install device (the smallest disk-like device), and install_bootloader puts GRUB or the
// ESPs on every holder disk (bootloader/softraid.ts).
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';
import { AgentError } from '../errors.js';
import { diskPartitions, listDisks } from './block-devices.js';
import { eraseDiskMetadata, rescanPartitions } from './erase.js';
import { findDevicesByHints } from './root-device-hints.js';
import { ESP_SIZE_MIB } from '../bootloader/softraid.js';
import { mdArrays, mdComponents, parentDisk, udevSettle } from '../bootloader/partitions.js';
import { bootModeOf, parseCapabilities } from '../image/capabilities.js';

export interface LogicalDisk {
  size_gb: number | 'MAX';
  raid_level: string;
  controller?: string;
  volume_name?: string;
  physical_disks?: Array<Record<string, unknown>>;
  [key: string]: unknown;
}

const LEVELS_SECOND = new Set(['0', '1', '1+0', '5', '6']);

function raidError(details: string): AgentError {
  return new AgentError('SoftwareRAIDError', `Software RAID caused unknown error: ${details}`);
}

/** The logical disks of a target_raid_config when they ask for software RAID; null when none does. */
export function softwareLogicalDisks(raidConfig: unknown): LogicalDisk[] | null {
  const disks = (raidConfig as { logical_disks?: unknown } | null)?.logical_disks;
  if (!Array.isArray(disks) || disks.length === 0) return null;
  const list = disks as LogicalDisk[];
  if (!list.some((d) => d?.controller === 'software')) return null;
  return list;
}

/** IPA's validate_configuration for software RAID; throws SoftwareRAIDError with the reason. */
export function validateSoftwareRaid(disks: LogicalDisk[], diskCount: number): void {
  if (disks.some((d) => d.controller !== 'software')) throw raidError('all logical disks must use controller "software"');
  if (disks.length > 2) throw raidError(`at most 2 logical disks are supported, got ${disks.length}`);
  if (String(disks[0]!.raid_level) !== '1') throw raidError(`the first logical disk must be RAID-1, got ${String(disks[0]!.raid_level)}`);
  if (disks[1] && !LEVELS_SECOND.has(String(disks[1].raid_level))) throw raidError(`RAID level ${String(disks[1].raid_level)} is not supported for software RAID`);
  if (disks.filter((d) => d.size_gb === 'MAX').length > 1) throw raidError('only one logical disk may have size_gb "MAX"');
  if (disks.length === 2 && disks[0]!.size_gb === 'MAX') throw raidError('only the last logical disk may have size_gb "MAX"');
  for (const d of disks) {
    if (d.size_gb !== 'MAX' && !(typeof d.size_gb === 'number' && d.size_gb > 0)) throw raidError(`size_gb must be a positive number or "MAX", got ${JSON.stringify(d.size_gb)}`);
    const need = String(d.raid_level) === '5' ? 3 : String(d.raid_level) === '6' ? 4 : String(d.raid_level) === '1+0' ? 4 : 2;
    if (diskCount < need) throw raidError(`RAID ${String(d.raid_level)} needs at least ${need} disks, ${diskCount} available`);
    if (d.physical_disks !== undefined && (!Array.isArray(d.physical_disks) || d.physical_disks.length < 2)) {
      throw raidError('physical_disks must list at least 2 disks');
    }
  }
}

/** The md level name mdadm takes. */
function mdLevel(level: string): string {
  return level === '1+0' ? '10' : level;
}

/** IPA's partition table type: disk_label capability, else gpt for UEFI and msdos for BIOS. */
export function partitionTableType(node: Record<string, unknown> | null): 'gpt' | 'msdos' {
  for (const where of ['instance_info', 'properties']) {
    const label = parseCapabilities((node?.[where] as Record<string, unknown> | undefined)?.['capabilities'])['disk_label'];
    if (label === 'gpt' || label === 'msdos') return label;
  }
  return bootModeOf(node) === 'uefi' ? 'gpt' : 'msdos';
}

/** Where the first RAID partition starts on a holder, leaving room for what the bootloader adds (as IPA). */
function raidStart(bootMode: string, table: 'gpt' | 'msdos'): number {
  if (bootMode === 'uefi') return ESP_SIZE_MIB + 1; // the ESP install_bootloader makes on every holder
  return table === 'gpt' ? 8 : 1; // BIOS boot partition on GPT; the MBR gap otherwise
}

export async function createSoftwareRaid(host: Host, node: Record<string, unknown> | null, log: Logger): Promise<Record<string, unknown>> {
  const raidConfig = node?.['target_raid_config'];
  const logical = softwareLogicalDisks(raidConfig);
  if (!logical) {
    log.info('no software RAID in target_raid_config: nothing to create');
    return {};
  }
  const disks = (await listDisks(host)).filter((d) => d.type === 'disk' || host.deviceAllowList !== null);
  validateSoftwareRaid(logical, disks.length);
  // Every logical disk spans the same holders: those its physical_disks hints pick, else all disks.
  const hints = logical.find((d) => d.physical_disks)?.physical_disks;
  const picked = new Set(hints ? hints.flatMap((h) => findDevicesByHints(disks, h).map((d) => d.name)) : disks.map((d) => d.name));
  const holders = disks.filter((d) => picked.has(d.name));
  if (holders.length < 2) throw raidError(`software RAID needs at least 2 disks, ${holders.length} found`);
  for (const d of holders) {
    if (d.children.some((c) => c.type === 'part')) throw raidError(`partitions detected on ${d.name}: run delete_configuration (or erase_devices_metadata) first`);
    await host.assertMayDestroy(d.name);
  }
  const table = partitionTableType(node);
  const bootMode = bootModeOf(node) ?? 'bios';
  const minSize = Math.min(...holders.map((d) => d.size));
  log.info({ holders: holders.map((d) => d.name), table, bootMode, logical }, 'creating software RAID');
  let start = raidStart(bootMode, table);
  for (const d of holders) await host.run('parted', ['-s', d.name, '--', 'mklabel', table], { timeoutMs: 60_000 });
  for (const [i, ld] of logical.entries()) {
    const end = ld.size_gb === 'MAX' ? null : start + Math.round(ld.size_gb * 1024);
    if (end !== null && end * 1024 * 1024 > minSize) throw raidError(`logical disk ${i} (${ld.size_gb} GiB) does not fit on ${holders.map((h) => h.name).join(', ')}`);
    for (const d of holders) {
      await host.run('parted', ['-s', '-a', 'optimal', d.name, '--', 'mkpart', 'primary', `${start}MiB`, end === null ? '-1' : `${end}MiB`], { timeoutMs: 60_000 });
    }
    if (end !== null) start = end;
  }
  for (const d of holders) await rescanPartitions(host, d.name);
  const created: string[] = [];
  for (const [i, ld] of logical.entries()) {
    const members: string[] = [];
    for (const d of holders) {
      const parts = await diskPartitions(host, d.name);
      const part = parts.find((p) => new RegExp(`\\D${i + 1}$`).test(p.kname));
      if (!part) throw raidError(`partition ${i + 1} did not appear on ${d.name}`);
      members.push(part.name);
    }
    const md = ld.volume_name ? `/dev/md/${ld.volume_name}` : `/dev/md${i}`;
    const args = ['--create', md, '--force', '--run', '--metadata=1', '--level', mdLevel(String(ld.raid_level))];
    if (ld.volume_name) args.push('--name', ld.volume_name);
    args.push('--raid-devices', String(members.length), ...members);
    const res = await host.run('mdadm', args, { allowFailure: true, timeoutMs: 120_000 });
    if (res.exitCode !== 0) throw raidError(`mdadm --create ${md} failed: ${res.stderr.trim()}`);
    created.push(md);
  }
  await udevSettle(host);
  log.info({ arrays: created }, 'software RAID created');
  return raidConfig as Record<string, unknown>;
}

export async function deleteSoftwareRaid(host: Host, log: Logger): Promise<null> {
  const holders = new Set<string>();
  const components: string[] = [];
  for (const md of await mdArrays(host)) {
    const members = await mdComponents(host, md);
    log.info({ md, members }, `stopping ${md}`);
    for (const m of members) {
      await host.assertMayDestroy(m);
      components.push(m);
      holders.add(await parentDisk(host, m));
    }
    const res = await host.run('mdadm', ['--stop', md], { allowFailure: true, timeoutMs: 120_000 });
    if (res.exitCode !== 0) throw raidError(`mdadm --stop ${md} failed: ${res.stderr.trim()}`);
  }
  // Members of arrays that were not assembled count too: any partition blkid calls a RAID member.
  for (const disk of await listDisks(host)) {
    for (const part of disk.children.filter((c) => c.type === 'part' && c.fstype === 'linux_raid_member')) {
      if (!components.includes(part.name)) components.push(part.name);
      holders.add(disk.name);
    }
  }
  for (const c of components) {
    await host.run('mdadm', ['--zero-superblock', c], { allowFailure: true, timeoutMs: 60_000 });
  }
  for (const disk of await listDisks(host)) {
    if (holders.has(disk.name)) await eraseDiskMetadata(host, disk, log);
  }
  log.info({ holders: [...holders], components }, 'software RAID deleted');
  return null;
}
