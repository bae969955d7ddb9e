// Disk erasure: the metadata wipe (partition tables, both GPT headers, filesystem/RAID signatures)
// and the full overwrite IPA falls back to when a disk has no hardware secure erase.
import type { BlockDevice } from './block-devices.js';
import { listDisks, partitionsThenDisk } from './block-devices.js';
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';
import { AgentError, errors } from '../errors.js';
import { assertNotProtected } from './protected-devices.js';

/** Bytes zeroed at each end of a disk: covers MBR, both GPT headers and arrays on 512e and 4Kn disks. */
export const EDGE_WIPE_BYTES = 1024 * 1024;

/** Makes the kernel's view of a disk's partitions match what is on it now. */
export async function rescanPartitions(host: Host, disk: string): Promise<void> {
  // partprobe adds/removes partitions with BLKPG; it also works where the kernel's own rescan does not.
  if (await host.hasCommand('partprobe')) await host.run('partprobe', [disk], { allowFailure: true, timeoutMs: 60_000 });
  if (await host.hasCommand('udevadm')) await host.run('udevadm', ['settle', '--timeout=30'], { allowFailure: true, timeoutMs: 40_000 });
}

async function zeroEdges(host: Host, disk: BlockDevice): Promise<void> {
  const fh = await host.openForWrite(disk.name);
  try {
    const size = disk.size;
    const span = Math.min(EDGE_WIPE_BYTES, Math.floor(size / 2));
    const zeros = Buffer.alloc(span);
    await fh.write(zeros, 0, span, 0);
    if (size > span) await fh.write(zeros, 0, span, size - span);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Wipes one disk's metadata the way IPA/ironic-lib does, plus the edges of the disk. */
export async function eraseDiskMetadata(host: Host, disk: BlockDevice, log: Logger): Promise<void> {
  await host.assertMayDestroy(disk.name);
  const devices = partitionsThenDisk(disk);
  for (const dev of devices) {
    await host.assertMayDestroy(dev);
    log.info({ device: dev }, 'wiping signatures');
  }
  // One wipefs for all of them, in this order: each subprocess costs more than its work here.
  await host.run('wipefs', ['--force', '--all', ...devices], { timeoutMs: 120_000 });
  // wipefs removed the GPT/MBR magic; zeroing both ends also clears the primary and backup headers
  // and partition arrays (IPA zeroes 33 sectors; 1 MiB also covers 4Kn disks). IPA's trailing
  // `sgdisk -Z` finds nothing left by then and costs a second (it sleeps after re-reading).
  await zeroEdges(host, disk);
  await rescanPartitions(host, disk.name);
}

/** `guard`: refuse disks holding shared-cluster filesystems (checked for all disks before any is touched). */
export async function eraseDevicesMetadata(host: Host, log: Logger, guard: boolean): Promise<null> {
  const disks = await listDisks(host);
  for (const d of disks) assertNotProtected(d, guard);
  const failures: string[] = [];
  for (const disk of disks) {
    try {
      await eraseDiskMetadata(host, disk, log.child({ device: disk.name }));
    } catch (err) {
      if (err instanceof AgentError && err.type === 'UnsafeHostError') throw err;
      failures.push(`${disk.name}: ${(err as Error).message}`);
    }
  }
  if (failures.length > 0) {
    throw errors.eraseFailed(`Failed to erase the metadata on the device(s): ${failures.join('; ')}`);
  }
  return null;
}

export interface EraseOptions {
  iterations: number;
  zeroize: boolean;
  concurrency: number;
  skipReadOnly: boolean;
}

/** The erase flags Ironic puts in driver_internal_info, with IPA's defaults. */
export function eraseOptionsFromNode(node: Record<string, unknown>): EraseOptions {
  const info = (node['driver_internal_info'] ?? {}) as Record<string, unknown>;
  const int = (v: unknown, d: number) => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : d);
  const bool = (v: unknown, d: boolean) => (typeof v === 'boolean' ? v : d);
  return {
    iterations: int(info['agent_erase_devices_iterations'], 1),
    zeroize: bool(info['agent_erase_devices_zeroize'], true),
    concurrency: Math.max(1, int(info['disk_erasure_concurrency'], 4)),
    skipReadOnly: bool(info['agent_erase_skip_read_only'], false),
  };
}

/** Overwrites a whole disk with shred: N random passes, then zeros if asked (IPA's fallback). */
export async function shredDisk(host: Host, disk: BlockDevice, opts: EraseOptions, log: Logger): Promise<void> {
  await host.assertMayDestroy(disk.name);
  if (opts.iterations === 0 && !opts.zeroize) {
    log.warn({ device: disk.name }, 'erase_devices: 0 iterations and no zeroing requested: nothing written');
    return;
  }
  const args = ['--force', ...(opts.zeroize ? ['--zero'] : []), '--verbose', '--iterations', String(opts.iterations), disk.name];
  log.info({ device: disk.name, iterations: opts.iterations, zeroize: opts.zeroize }, 'overwriting disk');
  const res = await host.run('shred', args, { allowFailure: true });
  if (res.exitCode !== 0) {
    throw errors.eraseFailed(`Erasing block device ${disk.name} failed with exit code ${res.exitCode}: ${res.stderr.trim().slice(-500)}`);
  }
}

export async function eraseDevices(host: Host, node: Record<string, unknown>, log: Logger, guard: boolean): Promise<Record<string, null>> {
  const opts = eraseOptionsFromNode(node);
  const disks = await listDisks(host);
  for (const d of disks) {
    await host.assertMayDestroy(d.name);
    assertNotProtected(d, guard);
  }
  const results: Record<string, null> = {};
  const failures: string[] = [];
  const queue = [...disks];
  const worker = async () => {
    for (let disk = queue.shift(); disk; disk = queue.shift()) {
      const dlog = log.child({ device: disk.name });
      if (disk.readOnly) {
        if (opts.skipReadOnly) {
          dlog.warn('skipping read-only device');
          continue;
        }
        failures.push(`${disk.name}: device is read-only`);
        continue;
      }
      try {
        await shredDisk(host, disk, opts, dlog);
        results[disk.name] = null;
      } catch (err) {
        failures.push(`${disk.name}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, disks.length) }, worker));
  if (failures.length > 0) throw errors.eraseFailed(failures.join('; '));
  return results;
}
