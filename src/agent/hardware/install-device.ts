// The disk an image goes to: the first disk matching the node's root-device hints
// (instance_info.root_device, else properties.root_device), or without hints the smallest disk of
// at least 4 GiB, as IPA. Disks listed in properties.skip_block_devices are never chosen. Disks
// that appear late (slow controllers) are waited for: ipa-disk-wait-attempts × -delay.
import { setTimeout as sleep } from 'node:timers/promises';
import type { InventoryDisk } from '../../protocol/inventory.js';
import { errors } from '../errors.js';
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';
import { collectDisks } from './inventory/disks.js';
import { findDevicesByHints } from './root-device-hints.js';

export const MIN_ROOT_DISK_BYTES = 4 * 2 ** 30;

type NodeLike = Record<string, unknown> | null | undefined;

function obj(v: unknown): Record<string, unknown> | null {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

export function rootDeviceHintsOf(node: NodeLike): Record<string, unknown> | null {
  const fromInstance = obj(obj(node?.['instance_info'])?.['root_device']);
  if (fromInstance && Object.keys(fromInstance).length) return fromInstance;
  const fromProps = obj(obj(node?.['properties'])?.['root_device']);
  return fromProps && Object.keys(fromProps).length ? fromProps : null;
}

/** Drops disks matching any hint dict of properties.skip_block_devices (volume_name entries name RAID volumes). */
export function withoutSkipped(disks: InventoryDisk[], node: NodeLike): InventoryDisk[] {
  const skip = obj(node?.['properties'])?.['skip_block_devices'];
  if (!Array.isArray(skip) || skip.length === 0) return disks;
  return disks.filter(
    (d) =>
      !skip.some((entry) => {
        const hints = obj(entry);
        if (!hints) return false;
        const { volume_name: _ignored, ...rest } = hints;
        return Object.keys(rest).length > 0 && findDevicesByHints([d], rest).length === 1;
      }),
  );
}

/** Without hints: the smallest disk of at least 4 GiB, ties broken by name. */
export function guessRootDisk(disks: InventoryDisk[]): InventoryDisk | null {
  return [...disks].filter((d) => d.size >= MIN_ROOT_DISK_BYTES).sort((a, b) => a.size - b.size || a.name.localeCompare(b.name))[0] ?? null;
}

/** Picks from a disk list (pure): throws DeviceNotFound with a message saying why nothing fits. */
export function pickInstallDevice(disks: InventoryDisk[], node: NodeLike, log: Logger): InventoryDisk {
  const candidates = withoutSkipped(disks, node);
  const hints = rootDeviceHintsOf(node);
  if (!hints) {
    const disk = guessRootDisk(candidates);
    if (!disk) {
      throw errors.deviceNotFound(
        `No suitable device was found for deployment - root device hints were not provided and all found block devices are smaller than ${MIN_ROOT_DISK_BYTES} bytes (${candidates.map((d) => `${d.name}: ${d.size}`).join(', ') || 'no disks'}).`,
      );
    }
    return disk;
  }
  const matches = findDevicesByHints(candidates, hints);
  if (matches.length === 0) {
    throw errors.deviceNotFound(
      `No suitable device was found for deployment using these hints ${JSON.stringify(hints)} among ${candidates.map((d) => d.name).join(', ') || 'no disks'}`,
    );
  }
  if (matches.length > 1) {
    // IPA takes the first match in inventory order; say loudly that the hints were not unique.
    log.warn({ hints, matches: matches.map((d) => d.name) }, `root device hints match ${matches.length} disks; using the first, ${matches[0]!.name}`);
  }
  return matches[0]!;
}

export interface ChooseOptions {
  waitAttempts: number;
  waitDelaySec: number;
  signal?: AbortSignal;
}

export async function chooseInstallDevice(host: Host, node: NodeLike, log: Logger, o: ChooseOptions): Promise<InventoryDisk> {
  const attempts = Math.max(1, o.waitAttempts);
  for (let i = 1; ; i++) {
    const disks = await collectDisks(host);
    try {
      const disk = pickInstallDevice(disks, node, log);
      log.info(
        { device: disk.name, size: disk.size, serial: disk.serial, wwn: disk.wwn, by_path: disk.by_path, model: disk.model, hints: rootDeviceHintsOf(node) },
        `install device: ${disk.name}`,
      );
      return disk;
    } catch (err) {
      if (i >= attempts) throw err;
      log.warn({ attempt: i, of: attempts }, `no install device yet (${(err as Error).message}); waiting ${o.waitDelaySec} s for disks`);
      await sleep(o.waitDelaySec * 1000, undefined, { signal: o.signal });
    }
  }
}
