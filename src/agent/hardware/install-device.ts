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

/** Python truthiness of a JSON value (IPA picks `instance_info.root_device or properties.root_device`). */
function truthy(v: unknown): boolean {
  if (v === null || v === undefined || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

export function rootDeviceHintsOf(node: NodeLike): Record<string, unknown> | null {
  for (const where of ['instance_info', 'properties'] as const) {
    const value = obj(node?.[where])?.['root_device'];
    if (!truthy(value)) continue;
    // A malformed root_device ("sda", a list) fails in IPA; ignoring it would write to the default disk instead.
    const hints = obj(value);
    if (!hints) throw errors.deviceNotFound(`${where}.root_device must be a dictionary of root device hints, not ${JSON.stringify(value)}`);
    return hints;
  }
  return null;
}

/**
 * Drops disks matching any hint dict of properties.skip_block_devices. An entry with a volume_name
 * names a RAID volume and is ignored here as a whole, other keys included (IPA's
 * get_skip_list_from_node: `if 'volume_name' in hint: continue`).
 */
export function withoutSkipped(disks: InventoryDisk[], node: NodeLike): InventoryDisk[] {
  const skip = obj(node?.['properties'])?.['skip_block_devices'];
  if (!Array.isArray(skip) || skip.length === 0) return disks;
  const skipped = new Set<string>();
  for (const entry of skip) {
    const hints = obj(entry);
    if (!hints || 'volume_name' in hints || Object.keys(hints).length === 0) continue;
    for (const d of findDevicesByHints(disks, hints)) skipped.add(d.name);
  }
  return disks.filter((d) => !skipped.has(d.name));
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
  // Invalid hints never become valid: fail now instead of after attempts × delay of waiting.
  const hints = rootDeviceHintsOf(node);
  if (hints) findDevicesByHints([], hints);
  for (let i = 1; ; i++) {
    const disks = await collectDisks(host);
    try {
      const disk = pickInstallDevice(disks, node, log);
      log.info(
        { device: disk.name, size: disk.size, serial: disk.serial, wwn: disk.wwn, by_path: disk.by_path, model: disk.model, hints },
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
