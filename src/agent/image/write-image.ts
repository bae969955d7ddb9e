// prepare_image / cache_image / the write_image deploy step: pick the install device, stream the
// image onto it, verify, and on any failure wipe the disk's partition tables so that the node can
// never boot a half-written image. Then the config drive and the partition UUIDs Ironic asks for.
import type { ImageInfo } from '../../protocol/image-info.js';
import type { PartitionUuids } from '../../protocol/agent-commands.js';
import { AgentError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Services } from '../services.js';
import { diskByName, type BlockDevice } from '../hardware/block-devices.js';
import { chooseInstallDevice } from '../hardware/install-device.js';
import { eraseDiskMetadata, rescanPartitions } from '../hardware/erase.js';
import { checksumError, createDigest, expectedDigest, type ExpectedDigest } from './checksum.js';
import { decodeConfigDrive, writeConfigDriveWholeDisk } from './configdrive.js';
import { fetchText, type DownloadOptions } from './download.js';
import { ImageProgress } from './progress.js';
import { streamImageToDevice, type StreamResult } from './stream-image.js';
import type { DeviceZeroing } from './device-writer.js';
import { holePuncher, punchesHoles, zeroOutIfCheap } from './zero-out.js';
import { bootModeOf } from './capabilities.js';
import { FileSpillArea } from './spill-area.js';
import type { HolePuncher, SpillArea } from './write-ops.js';
import type { FileHandle } from 'node:fs/promises';
import type { StreamDigest } from './parallel-digest.js';
import type { ImageProbe } from './partition-image.js';

/** The device opened with O_DIRECT for the image writer; null where the device refuses it. */
export async function openDirect(s: Services, device: string, log: Logger): Promise<FileHandle | null> {
  try {
    return await s.host.openForWrite(device, { direct: true });
  } catch (err) {
    log.warn({ device, err: (err as Error).message }, 'direct I/O unavailable: writing through the page cache');
    return null;
  }
}

export const ESP_PARTTYPES = new Set(['c12a7328-f81f-11d2-ba4b-00a0c93ec93b', '0xef']);

export interface WriteRequest {
  imageInfo: ImageInfo;
  configdrive: string | null;
  /** cache_image: write only, no config drive, no partition UUIDs. */
  cacheOnly?: boolean;
  force?: boolean;
}

export interface WriteContext {
  log: Logger;
  progress: ImageProgress;
  signal?: AbortSignal;
}

export function isPartitionImage(info: ImageInfo): boolean {
  return info.image_type === 'partition';
}

export function downloadOptions(s: Services, info: ImageInfo, log: Logger, signal?: AbortSignal): DownloadOptions {
  const headers: Record<string, string> = {};
  if (info.image_request_authorization) headers['authorization'] = Buffer.from(info.image_request_authorization, 'base64').toString('utf8');
  else if (info.image_server_auth_strategy === 'http_basic' && info.image_server_user) {
    headers['authorization'] = `Basic ${Buffer.from(`${info.image_server_user}:${info.image_server_password ?? ''}`).toString('base64')}`;
  }
  return {
    urls: info.urls,
    imageId: info.id,
    stallTimeoutSec: s.config.imageDownloadConnectionTimeout,
    retries: s.config.imageDownloadRetries,
    retryIntervalSec: s.config.imageDownloadRetryInterval,
    insecure: s.config.insecure,
    plainHttp: s.config.imageHttpClient === 'auto',
    proxies: info.proxies ?? null,
    noProxy: info.no_proxy ?? null,
    headers,
    log,
    signal,
  };
}

export function permittedFormats(s: Services): string[] {
  const fromConductor = s.state.conductorConfig['permitted_image_formats'];
  return Array.isArray(fromConductor) ? fromConductor.filter((f): f is string => typeof f === 'string') : ['raw', 'qcow2', 'iso'];
}

/** The MBR disk signature as IPA reports a whole-disk image's "root uuid": 0x%08x. */
export async function diskSignature(s: Services, device: string): Promise<string> {
  const fh = await s.host.openForWrite(device);
  try {
    const buf = Buffer.alloc(4);
    await fh.read(buf, 0, 4, 440);
    return `0x${buf.readUInt32LE(0).toString(16).padStart(8, '0')}`;
  } finally {
    await fh.close();
  }
}

/** Where a qcow2 reader spills on the target device (shared with partition-image.ts). */
export const fileSpill = (handle: FileHandle, start: number, capacity: number): SpillArea => new FileSpillArea(handle, start, capacity);

/** What a write does before the stream reaches the device. */
export interface StreamSetup {
  /** A digest whose thread was started ahead (it boots while the disk is chosen); made here otherwise. */
  started?: StreamDigest;
  /** Clears the device first (a whole disk's old signatures); the download starts meanwhile. */
  wipe?: () => Promise<void>;
}

/**
 * Streams the image onto `device` (a disk, or a partition up to `limit` bytes) and checks its
 * digest. `virtualSize`, when known up front, limits the span zeroed out before writing.
 */
export async function streamVerified(
  s: Services,
  device: { name: string; size: number },
  limit: number,
  info: ImageInfo,
  expected: ExpectedDigest,
  ctx: WriteContext,
  virtualSize: number | null,
  setup: StreamSetup = {},
): Promise<StreamResult> {
  const { log, progress } = ctx;
  const hash = setup.started ?? createDigest(expected.algorithm);
  try {
    // Only the span the image covers needs to read back as zeros (all of the device when the size
    // is unknown up front, as for compressed raw images).
    const zeroSpan = virtualSize !== null ? Math.min(device.size, Math.ceil(virtualSize / 4096) * 4096) : device.size;
    // Opened before the device is prepared, so that the download and its hash start meanwhile (the
    // writer finds its aligned buffers with the direct handle); nothing is written before then.
    const fh = await s.host.openForWrite(device.name);
    let directFh: FileHandle | null = null;
    let prepared: Promise<DeviceZeroing> | null = null;
    let result: StreamResult;
    try {
      directFh = await openDirect(s, device.name, log);
      prepared = prepareDevice(s, device.name, zeroSpan, setup.wipe, log);
      const download = { ...downloadOptions(s, info, log, ctx.signal), onSize: (n: number) => (progress.total = n), onResume: () => progress.resumes++ };
      result = await streamImageToDevice({
        download,
        hash,
        progress,
        fh,
        directFh,
        deviceName: device.name,
        deviceSize: limit,
        prepared,
        diskFormat: info.disk_format ?? null,
        permittedFormats: permittedFormats(s),
        log,
        makeSpill: fileSpill,
      });
    } finally {
      // The preparation has ended before the caller goes on (it wipes the disk after a failure).
      // The writer closes the hole puncher; this is for a failure before the writer was made.
      const zeroing = await prepared?.catch(() => null);
      await zeroing?.discard?.close();
      await fh.close();
      await directFh?.close();
    }
    progress.phase = 'verifying';
    const actual = await hash.digest();
    if (actual !== expected.value) throw checksumError(info.id, info.urls[0] ?? '', expected.value, actual);
    return result;
  } finally {
    // After digest() the thread is gone already; this ends it after a failure.
    hash.close();
  }
}

/** Wipes the device when asked, then finds how it takes zeros (zeroing it out where that is cheap). */
async function prepareDevice(s: Services, device: string, zeroSpan: number, wipe: (() => Promise<void>) | undefined, log: Logger): Promise<DeviceZeroing> {
  await wipe?.();
  const preZeroed = await zeroOutIfCheap(s.host, device, zeroSpan, log);
  let discard: HolePuncher | null = null;
  if (!preZeroed && (await punchesHoles(s.host, device))) {
    log.info({ device }, 'loop device: zero runs of the image will be discarded (holes punched) instead of written');
    discard = holePuncher(s.host, device);
  }
  return { preZeroed, discard };
}

export async function writeImage(s: Services, req: WriteRequest, ctx: WriteContext): Promise<{ message: string; device: string }> {
  const info = req.imageInfo;
  const log = ctx.log;
  if (isPartitionImage(info)) {
    const { writePartitionImage } = await import('./partition-image.js');
    return writePartitionImage(s, req, ctx);
  }
  // The image's checksum and probe are network round trips that need no disk: they run while the
  // install device is chosen (not for an image this boot already wrote, whose device is known).
  const cached = s.state.cachedImage;
  const preparing = req.force || cached?.id !== info.id ? prepareImage(s, info, ctx) : null;
  // Handled below; this keeps a failure from surfacing as unhandled while the disks are listed.
  preparing?.catch(() => undefined);
  let disk: BlockDevice;
  try {
    const chosen = await chooseInstallDevice(s.host, s.state.node, log, {
      waitAttempts: s.config.diskWaitAttempts,
      waitDelaySec: s.config.diskWaitDelay,
      signal: ctx.signal,
    });
    await s.host.assertMayDestroy(chosen.name);
    disk = await diskByName(s.host, chosen.name);
  } catch (err) {
    void preparing?.then((p) => p.warmHash.close(), () => undefined);
    throw err;
  }
  const alreadyThere = !req.force && cached?.id === info.id && cached.device === disk.name;
  if (!alreadyThere) {
    const { expected, probe, warmHash } = await (preparing ?? prepareImage(s, info, ctx));
    let result: StreamResult;
    try {
      result = await writeFitting(s, disk, info, expected, probe, ctx, warmHash);
    } finally {
      warmHash.close(); // unused (a failure before the write) or already done
    }
    ctx.progress.phase = 'finalizing';
    await finishWholeDisk(s, disk, result, log);
    if (req.cacheOnly) s.state.cachedImage = { id: info.id, device: disk.name };
  } else {
    log.info({ image: info.id, device: disk.name }, 'image already written to the device this boot: not writing it again');
  }
  if (req.cacheOnly) return { message: `image (${info.id}) ${alreadyThere ? 'already present on' : 'cached to'} device ${disk.name}`, device: disk.name };

  const configdrive = req.configdrive ?? info.configdrive ?? null;
  if (configdrive) {
    ctx.progress.phase = 'configdrive';
    const raw = /^https?:\/\//i.test(configdrive) ? await fetchText(configdrive, downloadOptions(s, info, log, ctx.signal)) : configdrive;
    await writeConfigDriveWholeDisk(s.host, await diskByName(s.host, disk.name), decodeConfigDrive(raw), log);
  }
  const uuids = await wholeDiskUuids(s, disk.name, info);
  s.state.partitionUuids = uuids;
  let message = `image (${info.id}) written to device ${disk.name} root_uuid=${uuids['root uuid']}`;
  if (uuids['efi system partition uuid']) message += ` efi_system_partition_uuid=${uuids['efi system partition uuid']}`;
  return { message, device: disk.name };
}

/** What is known of an image before anything is written: its digest, its probe, a started hash thread. */
interface PreparedImage {
  expected: ExpectedDigest;
  probe: ImageProbe;
  /**
   * The hashing thread of the first attempt, started as soon as the algorithm is known: it boots
   * (~0.1 s here) while the disk is prepared, not while the first megabytes wait for it.
   */
  warmHash: StreamDigest;
}

async function prepareImage(s: Services, info: ImageInfo, ctx: WriteContext): Promise<PreparedImage> {
  const fetchOpts = downloadOptions(s, info, ctx.log, ctx.signal);
  const expected = await expectedDigest(info, (url) => fetchText(url, fetchOpts));
  const warmHash = createDigest(expected.algorithm);
  try {
    // Nothing is touched before we know the image fits: its Content-Length (raw) or its qcow2
    // header says how big it is (compressed raw images only tell at the end; the writer's bound
    // catches those).
    const { probeImage } = await import('./partition-image.js');
    return { expected, probe: await probeImage(s, info, ctx.log, ctx.signal), warmHash };
  } catch (err) {
    warmHash.close();
    throw err;
  }
}

/**
 * Writes and verifies an image that fits `disk` (one more attempt after a checksum mismatch),
 * wiping the disk's partition tables after every failure.
 */
async function writeFitting(
  s: Services,
  disk: BlockDevice,
  info: ImageInfo,
  expected: ExpectedDigest,
  probe: ImageProbe,
  ctx: WriteContext,
  warmHash: StreamDigest,
): Promise<StreamResult> {
  const log = ctx.log;
  if (probe.virtualSize !== null && probe.virtualSize > disk.size) {
    throw new AgentError(
      'ImageWriteError',
      `Writing image to device ${disk.name} failed: the image needs ${probe.virtualSize} bytes but the device has ${disk.size}; nothing was written`,
    );
  }
  log.info(
    { device: disk.name, image: info.id, urls: probe.urls, algorithm: expected.algorithm, format: probe.format, compression: probe.compression, virtual_size: probe.virtualSize },
    'writing image',
  );
  const started = Date.now();
  let result: StreamResult | null = null;
  // One more full attempt after a checksum mismatch: a resumed download from a mirror that
  // changed under us is the likely cause; a second mismatch is final.
  for (let attempt = 1; !result; attempt++) {
    try {
      // The disk is wiped as the kernel sees it now: as listed just now for the first attempt,
      // listed again for a retry (a failed attempt may have changed its partitions, and wiping
      // partitions that are gone fails or, with --devices, is refused).
      const first = attempt === 1;
      const current = first ? disk : await diskByName(s.host, disk.name);
      result = await streamVerified(s, current, current.size, { ...info, urls: probe.urls }, expected, ctx, probe.virtualSize, {
        started: first ? warmHash : undefined,
        wipe: () => eraseDiskMetadata(s.host, current, log),
      });
    } catch (err) {
      // Wipe what is on the disk now: the partitions of the half-written image (the kernel only
      // learns about them from a rescan), not the ones the disk had before.
      const wipe = async () => {
        await rescanPartitions(s.host, disk.name);
        await eraseDiskMetadata(s.host, await diskByName(s.host, disk.name), log);
      };
      await wipe().catch((e: unknown) => log.error({ err: (e as Error).message }, 'could not wipe the disk after a failed write'));
      const retry = err instanceof AgentError && err.type === 'ImageChecksumError' && attempt < 2;
      log.error({ err: (err as Error).message, attempt, retry }, 'image write failed; partition tables wiped');
      if (!retry) throw err;
      ctx.progress.done = 0;
    }
  }
  const secs = (Date.now() - started) / 1000;
  log.info(
    { device: disk.name, ...result, seconds: secs, mb_per_s: Math.round(result.downloaded / secs / 1e6) },
    `image ${info.id} written to ${disk.name}`,
  );
  return result;
}

/** After a whole-disk write: partitions visible, backup GPT at the real end of the disk, ≥ 1 partition. */
async function finishWholeDisk(s: Services, disk: BlockDevice, result: StreamResult, log: Logger): Promise<void> {
  // blkid -p and sfdisk read the disk itself: one partition rescan, after both, is enough.
  const pttype = await s.host.run('blkid', ['-p', '-o', 'value', '-s', 'PTTYPE', disk.name], { allowFailure: true, timeoutMs: 30_000 });
  if (pttype.stdout.trim() === 'gpt' && result.extent < disk.size) {
    // The image's backup GPT sits at the end of the image, not of this bigger disk. sfdisk moves it
    // (and fixes the protective MBR) in milliseconds; sgdisk -e does the same but sleeps a second.
    if (await s.host.hasCommand('sfdisk')) {
      await s.host.run('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', '--relocate', 'gpt-bak-std', disk.name], { timeoutMs: 60_000 });
    } else {
      await s.host.run('sgdisk', ['-e', disk.name], { timeoutMs: 60_000 });
    }
  }
  await rescanPartitions(s.host, disk.name);
  const after = await diskByName(s.host, disk.name);
  if (!after.children.some((c) => c.type === 'part')) {
    await eraseDiskMetadata(s.host, after, log);
    throw new AgentError('DeploymentError', `the image written to ${disk.name} has no partition table: a whole-disk image must be partitioned`);
  }
}

async function wholeDiskUuids(s: Services, device: string, info: ImageInfo): Promise<PartitionUuids> {
  const uuids: PartitionUuids = { 'root uuid': await diskSignature(s, device) };
  const bootMode = info.deploy_boot_mode ?? bootModeOf(s.state.node);
  if (bootMode === 'uefi') {
    const disk = await diskByName(s.host, device);
    const esp = disk.children.find((c) => c.parttype && ESP_PARTTYPES.has(c.parttype.toLowerCase()));
    if (esp?.partuuid) uuids['efi system partition uuid'] = esp.partuuid;
  }
  return uuids;
}
