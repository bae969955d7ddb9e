// Partition images (image_info.image_type "partition"), as IPA 9.4.3 and ironic-lib's work_on_disk
// do them: the agent partitions the install disk itself — ESP (UEFI) | BIOS boot (BIOS + GPT) |
// PReP (ppc64 BIOS); ephemeral; swap; config drive; root last so cloud-init can grow it — formats
// the ESP, swap and ephemeral partitions, writes the config drive into its partition and streams
// the image onto the root partition. preserve_ephemeral keeps the partition table and the
// ephemeral filesystem and only rewrites root (and the config drive). Nothing half-written can
// boot: any failure after the disk was touched wipes the partition table (or, when the ephemeral
// data must survive, the root partition's signatures).
import { machine } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ImageInfo } from '../../protocol/image-info.js';
import type { PartitionUuids } from '../../protocol/agent-commands.js';
import { AgentError } from '../errors.js';
import type { Host } from '../host/host.js';
import { HostCommandError } from '../host/host.js';
import type { Logger } from '../log.js';
import type { Services } from '../services.js';
import { diskByName, type BlockDevice } from '../hardware/block-devices.js';
import { chooseInstallDevice } from '../hardware/install-device.js';
import { eraseDiskMetadata, rescanPartitions } from '../hardware/erase.js';
import { expectedDigest, type ExpectedDigest } from './checksum.js';
import { decodeConfigDrive, isoVolumeLabel } from './configdrive.js';
import { decompressing, type Compression } from './decompress.js';
import { downloadImage, fetchText } from './download.js';
import { detectFormat, type ImageFormat, type StreamResult } from './stream-image.js';
import { asBootMode, asObject as obj, bootModeOf, parseCapabilities } from './capabilities.js';
import { downloadOptions, streamVerified, type WriteContext, type WriteRequest } from './write-image.js';

const MiB = 1024 * 1024;

/** ironic-lib [disk_utils] defaults of the 2023.1 series (agent-protocol.md §1). */
export const EFI_SYSTEM_PARTITION_MIB = 200;
export const BIOS_BOOT_PARTITION_MIB = 1;
export const PREP_BOOT_PARTITION_MIB = 8;

export type BootMode = 'uefi' | 'bios';
export type DiskLabel = 'gpt' | 'msdos';

/** The keys of IPA's `partitions` map, exactly. */
export type PartitionRole =
  | 'efi system partition'
  | 'BIOS Boot partition'
  | 'PReP Boot partition'
  | 'ephemeral'
  | 'swap'
  | 'configdrive'
  | 'root';

export interface PlannedPartition {
  number: number;
  role: PartitionRole;
  startMiB: number;
  endMiB: number;
  /** parted's fs-type argument (sets the MBR id / GPT type), or null for none. */
  fsType: string | null;
  flags: string[];
}

export interface LayoutOptions {
  bootMode: BootMode;
  diskLabel: DiskLabel;
  cpuArch: string;
  rootMiB: number;
  swapMiB: number;
  ephemeralMiB: number;
  configdriveMiB: number;
}

/** The partitions ironic-lib's make_partitions creates, in its order, 1 MiB lead-in, contiguous. */
export function planPartitions(o: LayoutOptions): PlannedPartition[] {
  const parts: PlannedPartition[] = [];
  let start = 1;
  const add = (role: PartitionRole, sizeMiB: number, fsType: string | null, flags: string[]) => {
    parts.push({ number: parts.length + 1, role, startMiB: start, endMiB: start + sizeMiB, fsType, flags });
    start += sizeMiB;
  };
  const ppc64 = o.cpuArch.startsWith('ppc64');
  if (o.bootMode === 'uefi') add('efi system partition', EFI_SYSTEM_PARTITION_MIB, 'fat32', ['boot']);
  if (o.bootMode === 'bios' && o.diskLabel === 'gpt' && !ppc64) add('BIOS Boot partition', BIOS_BOOT_PARTITION_MIB, null, ['bios_grub']);
  if (ppc64 && o.bootMode === 'bios') add('PReP Boot partition', PREP_BOOT_PARTITION_MIB, null, [...(o.diskLabel === 'msdos' ? ['boot'] : []), 'prep']);
  if (o.ephemeralMiB > 0) add('ephemeral', o.ephemeralMiB, null, []);
  if (o.swapMiB > 0) add('swap', o.swapMiB, 'linux-swap', []);
  if (o.configdriveMiB > 0) add('configdrive', o.configdriveMiB, null, []);
  add('root', o.rootMiB, null, !ppc64 && o.bootMode === 'bios' && o.diskLabel === 'msdos' ? ['boot'] : []);
  return parts;
}

/** One parted call writing the whole table, as ironic-lib's DiskPartitioner.commit(). */
export function partedArgs(device: string, label: DiskLabel, plan: readonly PlannedPartition[]): string[] {
  const args = ['-a', 'optimal', '-s', device, '--', 'unit', 'MiB', 'mklabel', label];
  for (const p of plan) {
    // On GPT parted takes "primary" as the partition's name, as it does for IPA.
    args.push('mkpart', 'primary', ...(p.fsType ? [p.fsType] : []), String(p.startMiB), String(p.endMiB));
    for (const flag of p.flags) args.push('set', String(p.number), flag, 'on');
  }
  return args;
}

/** MiB the layout needs on the disk: its end plus room for the backup GPT. */
export function layoutNeedsMiB(plan: readonly PlannedPartition[], label: DiskLabel): number {
  const end = plan.length ? plan[plan.length - 1]!.endMiB : 1;
  return end + (label === 'gpt' ? 1 : 0);
}

// ---------------------------------------------------------------------------------------------
// Boot mode, disk label, architecture (IPA utils.get_node_boot_mode / get_partition_table_type_from_specs)

/**
 * Secure boot ⇒ uefi; else image_info.deploy_boot_mode (what the conductor resolved), then the
 * node's instance_info.deploy_boot_mode, capabilities boot_mode, driver_internal_info
 * deploy_boot_mode; else how the ramdisk itself booted.
 */
export function resolveBootMode(info: ImageInfo, node: Record<string, unknown> | null | undefined, ramdisk: BootMode): BootMode {
  const iiCaps = parseCapabilities(obj(node?.['instance_info'])['capabilities']);
  const nodeCaps = parseCapabilities(obj(node?.['properties'])['capabilities']);
  if (String(iiCaps['secure_boot'] ?? nodeCaps['secure_boot'] ?? 'false').toLowerCase() === 'true') return 'uefi';
  return asBootMode(info.deploy_boot_mode) ?? bootModeOf(node) ?? ramdisk;
}

/** gpt for UEFI; else disk_label (image_info, instance_info capabilities, properties capabilities); msdos by default. */
export function resolveDiskLabel(bootMode: BootMode, info: ImageInfo, node: Record<string, unknown> | null | undefined): DiskLabel {
  if (bootMode === 'uefi') return 'gpt';
  const iiCaps = parseCapabilities(obj(node?.['instance_info'])['capabilities']);
  const nodeCaps = parseCapabilities(obj(node?.['properties'])['capabilities']);
  const label = info.disk_label ?? iiCaps['disk_label'] ?? nodeCaps['disk_label'] ?? 'msdos';
  return label === 'gpt' ? 'gpt' : 'msdos';
}

async function ramdiskBootMode(host: Host): Promise<BootMode> {
  return (await host.exists('/sys/firmware/efi')) ? 'uefi' : 'bios';
}

async function cpuArchitecture(host: Host): Promise<string> {
  return (await host.readTextOrNull('/proc/sys/kernel/arch'))?.trim() || machine();
}

// ---------------------------------------------------------------------------------------------
// Sizes from image_info

function invalidParams(details: string): AgentError {
  return new AgentError('InvalidCommandParamsError', details);
}

function mebibytes(info: ImageInfo, key: 'root_mb' | 'swap_mb' | 'ephemeral_mb', required: boolean): number {
  const raw = info[key];
  if (raw === undefined || raw === null) {
    if (required) throw invalidParams(`image_info: ${key} is required for a partition image`);
    return 0;
  }
  const n = Math.trunc(Number(raw));
  if (!Number.isFinite(n) || n < 0 || (required && n === 0)) throw invalidParams(`image_info: ${key} must be a ${required ? 'positive' : 'non-negative'} number of MiB, not ${JSON.stringify(raw)}`);
  return n;
}

/** IPA's wording (standby._write_partition_image); `null` when the size is only known to exceed root. */
function tooSmall(imageBytes: number | null, rootMiB: number): AgentError {
  const size = imageBytes === null ? `more than ${rootMiB}` : String(Math.ceil(imageBytes / MiB));
  return invalidParams(`Root partition is too small for requested image. Image virtual size: ${size} MB, Root size: ${rootMiB} MB`);
}

// ---------------------------------------------------------------------------------------------
// Looking at the image before the disk is touched

export interface ImageProbe {
  format: ImageFormat;
  compression: Compression;
  /** Bytes the image occupies on the partition, when the first bytes tell (raw: its length; qcow2: its header). */
  virtualSize: number | null;
  /** The URLs to download from: the one that answered the probe and those after it. */
  urls: string[];
}

/** The virtual size from the first bytes of an image (after decompression) and its served length. */
export function virtualSizeOf(head: Buffer, compression: Compression, servedBytes: number | null): number | null {
  const format = detectFormat(head);
  if (format === 'qcow2') return head.length >= 32 ? Number(head.readBigUInt64BE(24)) : null;
  return compression === null ? servedBytes : null;
}

/**
 * Reads the first bytes of the image (one request, closed at once) to learn its format and, where
 * it can be known up front, its virtual size: IPA refuses an image bigger than root_mb before it
 * partitions anything, and so do we. Compressed raw images only show their size at the end; the
 * device writer's bound catches those.
 */
export async function probeImage(s: Services, info: ImageInfo, log: Logger, signal?: AbortSignal): Promise<ImageProbe> {
  let served: number | null = null;
  let serving: string | null = null;
  const src = downloadImage({ ...downloadOptions(s, info, log, signal), onSize: (n) => (served = n), onServing: (url) => (serving ??= url) });
  let it: AsyncIterator<Buffer> | null = null;
  try {
    // No pool: a decompressor that answers at once, whose chunks may be kept.
    const { stream, compression } = await decompressing(src);
    it = stream[Symbol.asyncIterator]();
    const chunks: Buffer[] = [];
    let have = 0;
    while (have < 512) {
      const r = await it.next();
      if (r.done) break;
      chunks.push(r.value);
      have += r.value.length;
    }
    const head = Buffer.concat(chunks);
    // URLs that just failed (and were retried) are not tried all over again for the real download.
    const urls = serving ? info.urls.slice(Math.max(0, info.urls.indexOf(serving))) : info.urls;
    return { format: detectFormat(head), compression, virtualSize: virtualSizeOf(head, compression, served), urls };
  } finally {
    await it?.return?.().catch(() => undefined);
    await src.return(undefined).catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// Partitions on the disk

function writeError(details: string): AgentError {
  return new AgentError('ImageWriteError', details);
}

/** host.run, with failures as ImageWriteError (what IPA makes of a failed partitioning/mkfs command). */
async function runTool(host: Host, cmd: string, args: string[], timeoutMs = 600_000): Promise<void> {
  try {
    await host.run(cmd, args, { timeoutMs });
  } catch (err) {
    if (err instanceof HostCommandError) {
      throw writeError(`Writing image to device failed: ${err.command} exited with ${err.exitCode ?? 'no code'}: ${err.stderr.trim().slice(0, 1000)}`);
    }
    throw err;
  }
}

/** The disk's partitions by partition number (sysfs `partition`). */
async function partitionsByNumber(s: Services, disk: string): Promise<Map<number, BlockDevice>> {
  const dev = await diskByName(s.host, disk);
  const out = new Map<number, BlockDevice>();
  for (const c of dev.children) {
    if (c.type !== 'part') continue;
    const n = Number((await s.host.readTextOrNull(`/sys/class/block/${c.kname}/partition`))?.trim());
    if (Number.isInteger(n) && n > 0) out.set(n, c);
  }
  return out;
}

/** Rescans until the kernel shows partitions 1..count (parted informs it; partprobe makes sure). */
async function waitForPartitions(s: Services, disk: string, count: number): Promise<Map<number, BlockDevice>> {
  let parts = new Map<number, BlockDevice>();
  for (let i = 0; i < 20; i++) {
    await rescanPartitions(s.host, disk);
    parts = await partitionsByNumber(s, disk);
    if (Array.from({ length: count }, (_v, k) => k + 1).every((n) => parts.has(n))) return parts;
    await sleep(250);
  }
  throw writeError(`Writing image to device ${disk} failed: after partitioning, the kernel shows partitions ${[...parts.keys()].join(', ') || 'none'} instead of 1-${count}`);
}

async function partitionTableType(host: Host, disk: string): Promise<string | null> {
  const res = await host.run('blkid', ['-p', '-o', 'value', '-s', 'PTTYPE', disk], { allowFailure: true, timeoutMs: 30_000 });
  return res.stdout.trim() || null;
}

/** ironic-lib utils.mkfs: mkswap for swap, else mkfs -t (-F for ext3/4; -n label for FAT, -L otherwise). */
export function mkfsCommand(fs: string, path: string, label: string | null): [string, string[]] {
  if (fs === 'swap') return ['mkswap', [...(label ? ['-L', label] : []), path]];
  const args = ['-t', fs];
  if (fs === 'ext3' || fs === 'ext4') args.push('-F');
  if (label) args.push(fs === 'msdos' || fs === 'vfat' ? '-n' : '-L', label);
  args.push(path);
  return ['mkfs', args];
}

async function mkfs(s: Services, fs: string, path: string, label: string | null, log: Logger): Promise<void> {
  await s.host.assertMayDestroy(path);
  const [cmd, args] = mkfsCommand(fs, path, label);
  log.info({ partition: path, fs, label }, `formatting ${path}`);
  await runTool(s.host, cmd, args);
}

/** Filesystem UUID of a partition, else its PARTUUID (ironic-lib block_uuid), probed on the device. */
export async function blockUuid(host: Host, device: string): Promise<string> {
  const res = await host.run('blkid', ['-p', '-o', 'export', device], { allowFailure: true, timeoutMs: 30_000 });
  const tags = new Map<string, string>();
  for (const line of res.stdout.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) tags.set(line.slice(0, i), line.slice(i + 1));
  }
  if (tags.get('UUID')) return tags.get('UUID')!;
  if (tags.get('PART_ENTRY_UUID')) return tags.get('PART_ENTRY_UUID')!;
  const part = await host.run('blkid', ['-s', 'PARTUUID', '-o', 'value', device], { allowFailure: true, timeoutMs: 30_000 });
  return part.stdout.trim();
}

async function writeBytes(host: Host, device: string, data: Buffer): Promise<void> {
  const fh = await host.openForWrite(device);
  try {
    let off = 0;
    while (off < data.length) {
      const { bytesWritten } = await fh.write(data, off, data.length - off, off);
      off += bytesWritten;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Makes a partition unbootable and unmountable: signatures gone, first MiB zeroed. */
async function wipePartition(host: Host, device: string, size: number): Promise<void> {
  await host.assertMayDestroy(device);
  await host.run('wipefs', ['--force', '--all', device], { allowFailure: true, timeoutMs: 120_000 });
  await writeBytes(host, device, Buffer.alloc(Math.min(MiB, size)));
}

// ---------------------------------------------------------------------------------------------

export interface Layout {
  plan: PlannedPartition[];
  /** role → partition device, in plan order. */
  devices: Map<PartitionRole, BlockDevice>;
}

export function layoutFrom(plan: PlannedPartition[], parts: Map<number, BlockDevice>): Layout {
  const devices = new Map<PartitionRole, BlockDevice>();
  for (const p of plan) devices.set(p.role, parts.get(p.number)!);
  return { plan, devices };
}

/** preserve_ephemeral: the existing table must be the one this layout would have made. */
async function existingLayout(s: Services, disk: BlockDevice, plan: PlannedPartition[], label: DiskLabel, iso: Buffer | null, log: Logger): Promise<Layout> {
  await rescanPartitions(s.host, disk.name);
  const parts = await partitionsByNumber(s, disk.name);
  const numbers = [...parts.keys()].sort((a, b) => a - b);
  const expected = plan.map((p) => `${p.number}: ${p.role}`).join(', ');
  const mismatch = (why: string) =>
    new AgentError(
      'CommandExecutionError',
      `preserve_ephemeral is set but the partitions of ${disk.name} are not the layout to preserve (${expected}): ${why}. Nothing was written.`,
    );
  if (numbers.length !== plan.length || numbers.some((n, i) => n !== i + 1)) {
    throw mismatch(`found ${numbers.length ? `partitions ${numbers.join(', ')}` : 'no partitions'}`);
  }
  const table = await partitionTableType(s.host, disk.name);
  const want = label === 'gpt' ? 'gpt' : 'dos';
  if (table !== want) log.warn({ device: disk.name, table, expected: want }, 'preserve_ephemeral: the existing partition table is not of the type this deploy would create; keeping it');
  const layout = layoutFrom(plan, parts);
  const cd = layout.devices.get('configdrive');
  if (iso && cd && iso.length > cd.size) throw mismatch(`the config drive (${iso.length} bytes) does not fit the existing config drive partition ${cd.name} (${cd.size} bytes)`);
  const eph = layout.devices.get('ephemeral');
  if (eph) log.info({ partition: eph.name, fstype: eph.fstype }, 'preserve_ephemeral: keeping the ephemeral partition and its data');
  return layout;
}

/** Wipes and partitions the disk; returns the new partitions. */
async function createLayout(s: Services, disk: BlockDevice, plan: PlannedPartition[], label: DiskLabel, log: Logger): Promise<Layout> {
  await eraseDiskMetadata(s.host, disk, log);
  log.info({ device: disk.name, label, partitions: plan.map((p) => ({ n: p.number, role: p.role, mib: p.endMiB - p.startMiB, flags: p.flags })) }, 'partitioning');
  await s.host.assertMayDestroy(disk.name);
  await runTool(s.host, 'parted', partedArgs(disk.name, label, plan), 120_000);
  return layoutFrom(plan, await waitForPartitions(s, disk.name, plan.length));
}

/** Streams the image onto the root partition and checks its digest. */
async function writeRoot(s: Services, root: BlockDevice, rootMiB: number, info: ImageInfo, expected: ExpectedDigest, format: ImageFormat, ctx: WriteContext): Promise<StreamResult> {
  try {
    return await streamVerified(s, root, Math.min(root.size, rootMiB * MiB), info, expected, ctx, null);
  } catch (err) {
    // The device writer's bound is root_mb: an image that turns out bigger (a compressed image only
    // shows its size once decompressing) gets IPA's error. A qcow2 header's virtual size is the real
    // one; a raw stream only shows that it went past the end.
    const needs = err instanceof AgentError && err.type === 'ImageWriteError' ? /the image needs (\d+) bytes/.exec(err.details) : null;
    if (needs) throw tooSmall(format === 'qcow2' ? Number(needs[1]) : null, Math.min(rootMiB, Math.floor(root.size / MiB)));
    throw err;
  }
}

export async function writePartitionImage(s: Services, req: WriteRequest, ctx: WriteContext): Promise<{ message: string; device: string }> {
  const info = req.imageInfo;
  const log = ctx.log;
  const node = s.state.node as Record<string, unknown> | null;

  const rootMiB = mebibytes(info, 'root_mb', true);
  const swapMiB = mebibytes(info, 'swap_mb', false);
  const ephemeralMiB = mebibytes(info, 'ephemeral_mb', false);
  const preserveEphemeral = info.preserve_ephemeral === true;
  const ephemeralFormat = info.ephemeral_format || 'ext4';

  const chosen = await chooseInstallDevice(s.host, node, log, {
    waitAttempts: s.config.diskWaitAttempts,
    waitDelaySec: s.config.diskWaitDelay,
    signal: ctx.signal,
  });
  await s.host.assertMayDestroy(chosen.name);
  const disk = await diskByName(s.host, chosen.name);

  const bootMode = resolveBootMode(info, node, await ramdiskBootMode(s.host));
  const label = resolveDiskLabel(bootMode, info, node);
  const cpuArch = await cpuArchitecture(s.host);

  // Everything that can fail without touching the disk comes first: the config drive, the
  // expected digest, the image's size.
  const configdrive = req.configdrive ?? info.configdrive ?? null;
  let iso: Buffer | null = null;
  if (configdrive) {
    const raw = /^https?:\/\//i.test(configdrive) ? await fetchText(configdrive, downloadOptions(s, info, log, ctx.signal)) : configdrive;
    iso = decodeConfigDrive(raw);
    const volume = isoVolumeLabel(iso);
    if (volume?.toLowerCase() !== 'config-2') log.warn({ volume }, 'the config drive is not an ISO-9660 image labelled config-2; writing it as given');
  }
  const expected = await expectedDigest(info, (url) => fetchText(url, downloadOptions(s, info, log, ctx.signal)));
  const probe = await probeImage(s, info, log, ctx.signal);
  log.info({ image: info.id, format: probe.format, compression: probe.compression, virtual_size: probe.virtualSize, urls: probe.urls, root_mb: rootMiB }, 'partition image');
  if (probe.virtualSize !== null && Math.ceil(probe.virtualSize / MiB) > rootMiB) throw tooSmall(probe.virtualSize, rootMiB);

  const plan = planPartitions({
    bootMode,
    diskLabel: label,
    cpuArch,
    rootMiB,
    swapMiB,
    ephemeralMiB,
    configdriveMiB: iso ? Math.ceil(iso.length / MiB) : 0,
  });
  const needMiB = layoutNeedsMiB(plan, label);
  if (!preserveEphemeral && needMiB * MiB > disk.size) {
    throw writeError(`Writing image to device ${disk.name} failed: the partitions need ${needMiB} MiB but the device has ${Math.floor(disk.size / MiB)} MiB`);
  }
  log.info({ device: disk.name, boot_mode: bootMode, disk_label: label, cpu_arch: cpuArch, preserve_ephemeral: preserveEphemeral }, 'writing a partition image');

  const started = Date.now();
  // preserve_ephemeral: the existing table is checked before anything is written (a mismatch
  // leaves the disk as it was).
  let layout: Layout | null = preserveEphemeral ? await existingLayout(s, disk, plan, label, iso, log) : null;
  const keptRoot = layout?.devices.get('root');
  if (keptRoot && probe.virtualSize !== null && probe.virtualSize > keptRoot.size) throw tooSmall(probe.virtualSize, Math.floor(keptRoot.size / MiB));
  try {
    layout ??= await createLayout(s, disk, plan, label, log);
    const part = (role: PartitionRole) => layout!.devices.get(role) ?? null;

    const esp = part('efi system partition');
    if (esp) await mkfs(s, 'vfat', esp.name, 'efi-part', log);

    const cd = part('configdrive');
    if (cd && iso) {
      ctx.progress.phase = 'configdrive';
      await writeBytes(s.host, cd.name, iso);
      log.info({ partition: cd.name, bytes: iso.length }, 'config drive written');
    }

    const root = part('root')!;
    log.info({ partition: root.name, image: info.id, urls: info.urls, algorithm: expected.algorithm }, 'writing the image to the root partition');
    let result: StreamResult | null = null;
    for (let attempt = 1; !result; attempt++) {
      try {
        result = await writeRoot(s, root, rootMiB, { ...info, urls: probe.urls }, expected, probe.format, ctx);
      } catch (err) {
        const retry = err instanceof AgentError && err.type === 'ImageChecksumError' && attempt < 2;
        log.error({ err: (err as Error).message, attempt, retry }, 'writing the root partition failed');
        if (!retry) throw err;
        ctx.progress.done = 0;
      }
    }
    const secs = (Date.now() - started) / 1000;
    log.info({ partition: root.name, ...result, seconds: secs }, `image ${info.id} written to ${root.name}`);

    ctx.progress.phase = 'finalizing';
    const swap = part('swap');
    if (swap) await mkfs(s, 'swap', swap.name, 'swap1', log);
    const eph = part('ephemeral');
    if (eph && !preserveEphemeral) await mkfs(s, ephemeralFormat, eph.name, 'ephemeral0', log);
    await rescanPartitions(s.host, disk.name);

    const uuids = await partitionUuids(s.host, layout, cpuArch);
    if (!uuids['root uuid']) throw writeError(`Writing image to device ${disk.name} failed: the root partition ${root.name} has neither a filesystem UUID nor a PARTUUID`);
    s.state.partitionUuids = uuids;
    if (req.cacheOnly) s.state.cachedImage = { id: info.id, device: disk.name };

    let message = `image (${info.id}) ${req.cacheOnly ? 'cached to' : 'written to'} device ${disk.name} root_uuid=${uuids['root uuid']}`;
    if (info.deploy_boot_mode === 'uefi' && uuids['efi system partition uuid']) message += ` efi_system_partition_uuid=${uuids['efi system partition uuid']}`;
    return { message, device: disk.name };
  } catch (err) {
    await wipeAfterFailure(s, disk.name, preserveEphemeral ? layout!.devices.get('root')! : null, log);
    throw err;
  }
}

/** After a failure: no partition table (or, preserving ephemeral data, no root filesystem) is left to boot. */
async function wipeAfterFailure(s: Services, disk: string, preservedRoot: BlockDevice | null, log: Logger): Promise<void> {
  try {
    if (preservedRoot) {
      await wipePartition(s.host, preservedRoot.name, preservedRoot.size);
      log.error({ partition: preservedRoot.name }, 'partition image write failed; root partition wiped (ephemeral partition kept)');
    } else {
      await eraseDiskMetadata(s.host, await diskByName(s.host, disk), log);
      log.error({ device: disk }, 'partition image write failed; partition table wiped');
    }
  } catch (e) {
    log.error({ err: (e as Error).message }, 'could not wipe the disk after a failed write');
  }
}

/** IPA's partition-image answer to get_partition_uuids: partitions map first, then the UUIDs. */
export async function partitionUuids(host: Host, layout: Layout, cpuArch: string): Promise<PartitionUuids> {
  const partitions: Record<string, string> = {};
  for (const p of layout.plan) partitions[p.role] = layout.devices.get(p.role)!.name;
  const root = layout.devices.get('root')!;
  const esp = layout.devices.get('efi system partition');
  const uuids: PartitionUuids = {
    partitions,
    'root uuid': await blockUuid(host, root.name),
    'efi system partition uuid': esp ? await blockUuid(host, esp.name) : null,
  };
  if (cpuArch.startsWith('ppc')) {
    const prep = layout.devices.get('PReP Boot partition');
    uuids['PReP Boot partition uuid'] = prep ? await blockUuid(host, prep.name) : null;
  }
  return uuids;
}
