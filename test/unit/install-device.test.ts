// The install device: IPA's choice without hints (the smallest disk of at least 4 GiB), hints from
// instance_info before properties, the skip list, several or no matches, and the wait for a disk
// that appears late (a real loop device attached while the agent is already waiting for it).
import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentError } from '../../src/agent/errors.js';
import { LocalHost } from '../../src/agent/host/host.js';
import {
  chooseInstallDevice,
  guessRootDisk,
  MIN_ROOT_DISK_BYTES,
  pickInstallDevice,
  rootDeviceHintsOf,
  withoutSkipped,
} from '../../src/agent/hardware/install-device.js';
import type { InventoryDisk } from '../../src/protocol/inventory.js';
import { lateLoopDevice, type LateLoopDevice } from '../helpers/late-loop-device.js';
import { captureLog } from './support/log-capture.js';

const GiB = 2 ** 30;

function disk(name: string, size: number, extra: Partial<InventoryDisk> = {}): InventoryDisk {
  return {
    name,
    model: null,
    size,
    rotational: true,
    wwn: null,
    serial: null,
    vendor: null,
    wwn_with_extension: null,
    wwn_vendor_extension: null,
    hctl: null,
    by_path: null,
    ...extra,
  };
}

const SDA = disk('/dev/sda', 2 * GiB, { serial: 'SMALL1', model: 'Tiny' });
const SDB = disk('/dev/sdb', 500 * GiB, { serial: 'BIG1', model: 'Samsung SSD 860', rotational: false, wwn: '0x5002538e40a1b2c3' });
const SDC = disk('/dev/sdc', 8 * GiB, { serial: 'MID1', model: 'QEMU HARDDISK', by_path: '/dev/disk/by-path/pci-0000:00:05.0' });
const SDD = disk('/dev/sdd', 8 * GiB, { serial: 'MID2', model: 'QEMU HARDDISK' });
const NVME = disk('/dev/nvme0n1', 1000 * GiB, { serial: 'NV1', model: 'INTEL SSDPE2KX010T8', rotational: false });
const DISKS = [SDA, SDB, SDD, SDC, NVME];

function pick(disks: InventoryDisk[], node: Record<string, unknown>) {
  const cap = captureLog();
  return { disk: pickInstallDevice(disks, node, cap.log), cap };
}

function failure(fn: () => unknown): AgentError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).type).toBe('DeviceNotFound');
    return err as AgentError;
  }
  throw new Error('expected DeviceNotFound');
}

describe('without hints: the smallest disk of at least 4 GiB', () => {
  it('skips the 2 GiB disk and takes the smallest adequate one', () => {
    expect(pick(DISKS, {}).disk.name).toBe('/dev/sdc');
    expect(pick([SDA, SDB, NVME], {}).disk.name).toBe('/dev/sdb');
  });

  it('breaks ties by name, whatever the inventory order', () => {
    expect(pick([SDD, SDC], {}).disk.name).toBe('/dev/sdc');
    expect(pick([SDC, SDD], {}).disk.name).toBe('/dev/sdc');
    expect(guessRootDisk([disk('/dev/vdb', 5 * GiB), disk('/dev/vda', 5 * GiB)])!.name).toBe('/dev/vda');
  });

  it('4 GiB exactly is enough, one byte less is not', () => {
    expect(pick([disk('/dev/sda', MIN_ROOT_DISK_BYTES)], {}).disk.name).toBe('/dev/sda');
    const e = failure(() => pick([disk('/dev/sda', MIN_ROOT_DISK_BYTES - 1)], {}));
    expect(e.details).toContain(`/dev/sda: ${MIN_ROOT_DISK_BYTES - 1}`);
  });

  it('nothing big enough: DeviceNotFound naming every disk and its size', () => {
    const e = failure(() => pick([SDA, disk('/dev/sdb', 3 * GiB)], {}));
    expect(e.details).toMatch(/root device hints were not provided and all found block devices are smaller than 4294967296 bytes/);
    expect(e.details).toContain(`/dev/sda: ${2 * GiB}`);
    expect(e.details).toContain(`/dev/sdb: ${3 * GiB}`);
    expect(failure(() => pick([], {})).details).toContain('no disks');
  });

  it('empty hint dicts count as no hints', () => {
    expect(pick(DISKS, { instance_info: { root_device: {} }, properties: { root_device: {} } }).disk.name).toBe('/dev/sdc');
  });
});

describe('hints', () => {
  it('instance_info.root_device wins over properties.root_device', () => {
    const node = { instance_info: { root_device: { serial: 'BIG1' } }, properties: { root_device: { serial: 'NV1' } } };
    expect(rootDeviceHintsOf(node)).toEqual({ serial: 'BIG1' });
    expect(pick(DISKS, node).disk.name).toBe('/dev/sdb');
    expect(pick(DISKS, { instance_info: {}, properties: { root_device: { serial: 'NV1' } } }).disk.name).toBe('/dev/nvme0n1');
    expect(pick(DISKS, { instance_info: { root_device: {} }, properties: { root_device: { serial: 'NV1' } } }).disk.name).toBe('/dev/nvme0n1');
  });

  it('a root_device that is not a dict fails instead of falling back to the default disk', () => {
    for (const bad of ['sda', ['/dev/sda'], 5, true]) {
      expect(failure(() => pick(DISKS, { instance_info: { root_device: bad } })).details).toMatch(/instance_info.root_device must be a dictionary/);
      expect(failure(() => pick(DISKS, { properties: { root_device: bad } })).details).toMatch(/properties.root_device must be a dictionary/);
    }
    // Python-falsy values are no hints at all, as in IPA's `instance_info.root_device or properties.root_device`.
    for (const none of ['', null, [], 0, false]) expect(pick(DISKS, { instance_info: { root_device: none } }).disk.name).toBe('/dev/sdc');
  });

  it('hints may pick a disk the default never would (even one under 4 GiB)', () => {
    expect(pick(DISKS, { properties: { root_device: { size: 2 } } }).disk.name).toBe('/dev/sda');
    expect(pick(DISKS, { properties: { root_device: { name: 'nvme0n1' } } }).disk.name).toBe('/dev/nvme0n1');
    expect(pick(DISKS, { properties: { root_device: { rotational: false, size: '>= 600' } } }).disk.name).toBe('/dev/nvme0n1');
  });

  it('several matches: the first in inventory order, with a warning naming them all', () => {
    const { disk: d, cap } = pick(DISKS, { properties: { root_device: { model: 'qemu harddisk' } } });
    expect(d.name).toBe('/dev/sdd'); // inventory order, not name order
    const warn = cap.lines().find((l) => l.level === 40);
    expect(warn?.msg).toMatch(/match 2 disks; using the first, \/dev\/sdd/);
    expect(warn?.['matches']).toEqual(['/dev/sdd', '/dev/sdc']);
    // A unique match logs no warning.
    expect(pick(DISKS, { properties: { root_device: { serial: 'MID1' } } }).cap.lines()).toEqual([]);
  });

  it('no match: DeviceNotFound naming the hints and the candidates', () => {
    const e = failure(() => pick(DISKS, { properties: { root_device: { serial: 'NOPE' } } }));
    expect(e.details).toMatch(/No suitable device was found for deployment using these hints \{"serial":"NOPE"\}/);
    expect(e.details).toContain('/dev/sda, /dev/sdb, /dev/sdd, /dev/sdc, /dev/nvme0n1');
  });

  it('invalid hints: DeviceNotFound with ironic-lib\'s reason', () => {
    const e = failure(() => pick(DISKS, { properties: { root_device: { size: 'big' } } }));
    expect(e.details).toMatch(/because they failed to validate. Error: Root device hint "size" is not an integer value/);
    expect(failure(() => pick(DISKS, { properties: { root_device: { colour: 'red' } } })).details).toMatch(/The hints "colour" are invalid/);
  });
});

describe('properties.skip_block_devices', () => {
  it('drops every disk matching any hint dict, with or without root-device hints', () => {
    const node = { properties: { skip_block_devices: [{ name: '/dev/sdc' }, { serial: 'BIG1' }] } };
    expect(withoutSkipped(DISKS, node).map((d) => d.name)).toEqual(['/dev/sda', '/dev/sdd', '/dev/nvme0n1']);
    expect(pick(DISKS, node).disk.name).toBe('/dev/sdd');
    const hinted = { properties: { ...node.properties, root_device: { model: 'qemu harddisk' } } };
    expect(pick(DISKS, hinted).disk.name).toBe('/dev/sdd');
    const skippedTarget = { properties: { ...node.properties, root_device: { serial: 'BIG1' } } };
    expect(failure(() => pick(DISKS, skippedTarget)).details).toMatch(/using these hints \{"serial":"BIG1"\} among \/dev\/sda, \/dev\/sdd, \/dev\/nvme0n1/);
  });

  it('hint dicts use the full hint language', () => {
    const node = { properties: { skip_block_devices: [{ size: '>= 100' }, { model: '<in> qemu', serial: 'MID2' }] } };
    expect(withoutSkipped(DISKS, node).map((d) => d.name)).toEqual(['/dev/sda', '/dev/sdc']);
  });

  it('volume_name entries name RAID volumes and are ignored as a whole, as IPA does', () => {
    const node = { properties: { skip_block_devices: [{ volume_name: 'large' }, { volume_name: 'root', name: '/dev/sdc' }] } };
    expect(withoutSkipped(DISKS, node)).toEqual(DISKS);
    expect(pick(DISKS, node).disk.name).toBe('/dev/sdc');
  });

  it('junk entries are ignored; invalid hint dicts fail like root-device hints', () => {
    expect(withoutSkipped(DISKS, { properties: { skip_block_devices: ['sda', null, 5, {}] } })).toEqual(DISKS);
    expect(withoutSkipped(DISKS, { properties: { skip_block_devices: 'sda' } })).toEqual(DISKS);
    expect(failure(() => withoutSkipped(DISKS, { properties: { skip_block_devices: [{ size: -1 }] } })).details).toMatch(/should be a positive integer/);
  });

  it('skipping every adequate disk leaves nothing', () => {
    const node = { properties: { skip_block_devices: [{ size: '>= 4' }] } };
    expect(failure(() => pick(DISKS, node)).details).toMatch(/smaller than 4294967296 bytes \(\/dev\/sda: 2147483648\)/);
  });
});

describe('chooseInstallDevice waits for disks (ipa-disk-wait-attempts × -delay)', () => {
  let late: LateLoopDevice | null = null;
  afterEach(async () => {
    await late?.destroy();
    late = null;
  });

  const hostFor = (path: string) => {
    const cap = captureLog();
    return { cap, host: new LocalHost({ sysRoot: '/', devices: [path], power: 'none', log: cap.log }) };
  };

  it('finds a real loop device that is attached only after the wait started', async () => {
    late = await lateLoopDevice(4608); // 4.5 GiB, sparse: the default (>= 4 GiB) takes it
    expect(existsSync(late.path)).toBe(false);
    const { cap, host } = hostFor(late.path);
    const started = Date.now();
    const choosing = chooseInstallDevice(host, {}, cap.log, { waitAttempts: 40, waitDelaySec: 0.25 });
    await new Promise((r) => setTimeout(r, 700));
    await late.attach();
    const d = await choosing;
    const elapsed = Date.now() - started;
    expect(d.name).toBe(late.path);
    expect(d.size).toBe(4608 * 2 ** 20);
    const waits = cap.lines().filter((l) => /no install device yet/.test(String(l.msg)));
    expect(waits.length).toBeGreaterThanOrEqual(2);
    expect(waits[0]).toMatchObject({ attempt: 1, of: 40 });
    expect(waits[0]!.msg).toMatch(/no disks/);
    // Each failed attempt slept the delay.
    expect(elapsed).toBeGreaterThanOrEqual(waits.length * 250 - 20);
    const chosen = cap.lines().find((l) => /^install device: /.test(String(l.msg)));
    expect(chosen).toMatchObject({ device: late.path, size: 4608 * 2 ** 20 });
  });

  it('also waits when hints name a disk that is not there yet', async () => {
    late = await lateLoopDevice(64);
    const { cap, host } = hostFor(late.path);
    const node = { instance_info: { root_device: { name: late.path, size: '<= 1' } } };
    const choosing = chooseInstallDevice(host, node, cap.log, { waitAttempts: 40, waitDelaySec: 0.2 });
    await new Promise((r) => setTimeout(r, 500));
    await late.attach();
    expect((await choosing).name).toBe(late.path);
  });

  it('gives up after attempts × delay with the last DeviceNotFound', async () => {
    late = await lateLoopDevice(64); // never attached
    const { cap, host } = hostFor(late.path);
    const started = Date.now();
    await expect(chooseInstallDevice(host, {}, cap.log, { waitAttempts: 3, waitDelaySec: 0.2 })).rejects.toMatchObject({ type: 'DeviceNotFound' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(2 * 200 - 20); // 3 attempts, 2 sleeps
    expect(cap.lines().filter((l) => /no install device yet/.test(String(l.msg)))).toHaveLength(2);
  });

  it('does not wait at all for hints that can never be valid', async () => {
    const { cap, host } = hostFor('/dev/loop-ferrum-none');
    const started = Date.now();
    await expect(
      chooseInstallDevice(host, { properties: { root_device: { size: 'big' } } }, cap.log, { waitAttempts: 10, waitDelaySec: 1 }),
    ).rejects.toMatchObject({ type: 'DeviceNotFound' });
    expect(Date.now() - started).toBeLessThan(900);
  });
});
