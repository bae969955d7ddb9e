// The install device on real block devices: three sparse loop devices (2, 5 and 6 GiB) and a
// LocalHost limited to them. Loop devices have no serial, WWN or by-path link, so the hints here
// are size, name and rotational (the 6 GiB one is marked non-rotational through sysfs).
import { writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentError } from '../../src/agent/errors.js';
import { LocalHost } from '../../src/agent/host/host.js';
import { collectDisks } from '../../src/agent/hardware/inventory/disks.js';
import { chooseInstallDevice, pickInstallDevice } from '../../src/agent/hardware/install-device.js';
import type { InventoryDisk } from '../../src/protocol/inventory.js';
import { createLoopDevice, type LoopDevice } from '../helpers/loop-device.js';
import { captureLog } from '../unit/support/log-capture.js';

const GiB = 2 ** 30;

describe('install device on three loop devices', () => {
  let small: LoopDevice;
  let medium: LoopDevice;
  let large: LoopDevice;
  let host: LocalHost;
  let disks: InventoryDisk[];
  const rotationalFile = () => `/sys/block/${basename(large.path)}/queue/rotational`;

  beforeAll(async () => {
    small = await createLoopDevice(2048);
    medium = await createLoopDevice(5120);
    large = await createLoopDevice(6144);
    await writeFile(rotationalFile(), '0');
    host = new LocalHost({ sysRoot: '/', devices: [small.path, medium.path, large.path], power: 'none', log: captureLog().log });
    disks = await collectDisks(host);
  });

  afterAll(async () => {
    if (large) await writeFile(rotationalFile(), '1').catch(() => undefined);
    await Promise.all([small?.destroy(), medium?.destroy(), large?.destroy()]);
  });

  const choose = async (node: Record<string, unknown>) => {
    const cap = captureLog();
    const d = await chooseInstallDevice(host, node, cap.log, { waitAttempts: 1, waitDelaySec: 0 });
    return { name: d.name, disk: d, cap };
  };

  it('the inventory sees exactly the three devices, with their sizes and rotational flags', () => {
    expect(disks.map((d) => [d.name, d.size, d.rotational])).toEqual([
      [small.path, 2 * GiB, true],
      [medium.path, 5 * GiB, true],
      [large.path, 6 * GiB, false],
    ]);
  });

  it('without hints takes the smallest disk of at least 4 GiB: the 5 GiB one', async () => {
    expect((await choose({})).name).toBe(medium.path);
  });

  it('size hints (GiB) pick the right device, including one under 4 GiB', async () => {
    expect((await choose({ properties: { root_device: { size: 6 } } })).name).toBe(large.path);
    expect((await choose({ properties: { root_device: { size: '2' } } })).name).toBe(small.path);
    expect((await choose({ properties: { root_device: { size: '> 5' } } })).name).toBe(large.path);
    expect((await choose({ properties: { root_device: { size: '<= 5' } } })).name).toBe(small.path);
    // ironic-lib compares the size (a float) with the <or> strings: never equal.
    expect(await choose({ properties: { root_device: { size: '<or> 5 <or> 6' } } }).catch((e: unknown) => e)).toMatchObject({ type: 'DeviceNotFound' });
  });

  it('name hints, with and without /dev/', async () => {
    for (const l of [small, medium, large]) {
      expect((await choose({ instance_info: { root_device: { name: l.path } } })).name).toBe(l.path);
      expect((await choose({ instance_info: { root_device: { name: basename(l.path) } } })).name).toBe(l.path);
    }
  });

  it('rotational hints, alone and combined', async () => {
    expect((await choose({ properties: { root_device: { rotational: false } } })).name).toBe(large.path);
    expect((await choose({ properties: { root_device: { rotational: 'true', size: '>= 4' } } })).name).toBe(medium.path);
    const both = await choose({ properties: { root_device: { rotational: true } } });
    expect(both.name).toBe(small.path); // first in inventory order...
    expect(both.cap.lines().find((l) => l.level === 40)?.['matches']).toEqual([small.path, medium.path]); // ...with a warning
  });

  it('instance_info hints win; the skip list removes devices from every choice', async () => {
    expect((await choose({ instance_info: { root_device: { size: 2 } }, properties: { root_device: { size: 6 } } })).name).toBe(small.path);
    expect((await choose({ properties: { skip_block_devices: [{ name: medium.path }] } })).name).toBe(large.path);
    const none = await choose({ properties: { skip_block_devices: [{ size: '>= 4' }] } }).catch((e: unknown) => e);
    expect(none).toBeInstanceOf(AgentError);
    expect((none as AgentError).details).toMatch(new RegExp(`smaller than 4294967296 bytes \\(${small.path}: ${2 * GiB}\\)`));
  });

  it('a hint matching nothing is a clear DeviceNotFound', () => {
    expect(() => pickInstallDevice(disks, { properties: { root_device: { size: 7 } } }, captureLog().log)).toThrow(
      /No suitable device was found for deployment using these hints \{"size":7\}/,
    );
  });

  it('logs the chosen device with its serial, WWN and by-path', async () => {
    const { disk, cap } = await choose({ properties: { root_device: { size: 5 } } });
    const line = cap.lines().find((l) => l.msg === `install device: ${medium.path}`);
    expect(line).toBeDefined();
    expect(line).toMatchObject({
      level: 30,
      device: medium.path,
      size: 5 * GiB,
      serial: disk.serial,
      wwn: disk.wwn,
      by_path: disk.by_path,
      model: disk.model,
      hints: { size: 5 },
    });
    // Loop devices have none of them; the keys are still there, as null.
    for (const k of ['serial', 'wwn', 'by_path']) expect(line).toHaveProperty(k, null);
  });
});
