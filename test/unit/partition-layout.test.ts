// The pure parts of partition-image writing, against what ironic-lib's make_partitions /
// DiskPartitioner and IPA's boot-mode / disk-label resolution do (agent-protocol.md §7.5).
import { describe, expect, it } from 'vitest';
import type { ImageInfo } from '../../src/protocol/index.js';
import type { BlockDevice } from '../../src/agent/hardware/block-devices.js';
import {
  blockUuid,
  layoutFrom,
  layoutNeedsMiB,
  mkfsCommand,
  partedArgs,
  partitionUuids,
  planPartitions,
  resolveBootMode,
  resolveDiskLabel,
  virtualSizeOf,
  type LayoutOptions,
} from '../../src/agent/image/partition-image.js';
import { parseCapabilities } from '../../src/agent/image/capabilities.js';
import { FakeHost, fail, ok } from './support/fake-host.js';

const base: LayoutOptions = { bootMode: 'bios', diskLabel: 'msdos', cpuArch: 'x86_64', rootMiB: 10240, swapMiB: 0, ephemeralMiB: 0, configdriveMiB: 0 };
const roles = (o: Partial<LayoutOptions>) => planPartitions({ ...base, ...o }).map((p) => [p.number, p.role, p.startMiB, p.endMiB, p.fsType, p.flags]);
const info = (o: Partial<ImageInfo> = {}): ImageInfo => ({ id: 'x', urls: ['http://x/y'], ...o });

describe('planPartitions (ironic-lib make_partitions)', () => {
  it('BIOS + msdos: ephemeral, swap, config drive, then root with the boot flag, from 1 MiB', () => {
    expect(roles({ swapMiB: 512, ephemeralMiB: 2048, configdriveMiB: 1 })).toEqual([
      [1, 'ephemeral', 1, 2049, null, []],
      [2, 'swap', 2049, 2561, 'linux-swap', []],
      [3, 'configdrive', 2561, 2562, null, []],
      [4, 'root', 2562, 12802, null, ['boot']],
    ]);
  });

  it('UEFI: a 200 MiB ESP (fat32, boot flag) first; root without the boot flag', () => {
    expect(roles({ bootMode: 'uefi', diskLabel: 'gpt', swapMiB: 64 })).toEqual([
      [1, 'efi system partition', 1, 201, 'fat32', ['boot']],
      [2, 'swap', 201, 265, 'linux-swap', []],
      [3, 'root', 265, 10505, null, []],
    ]);
  });

  it('BIOS + gpt: a 1 MiB bios_grub partition first', () => {
    expect(roles({ diskLabel: 'gpt' })).toEqual([
      [1, 'BIOS Boot partition', 1, 2, null, ['bios_grub']],
      [2, 'root', 2, 10242, null, []],
    ]);
  });

  it('ppc64 BIOS: an 8 MiB PReP partition (boot+prep on msdos, prep on gpt), no BIOS boot partition, no root boot flag', () => {
    expect(roles({ cpuArch: 'ppc64le' })).toEqual([
      [1, 'PReP Boot partition', 1, 9, null, ['boot', 'prep']],
      [2, 'root', 9, 10249, null, []],
    ]);
    expect(roles({ cpuArch: 'ppc64le', diskLabel: 'gpt' })).toEqual([
      [1, 'PReP Boot partition', 1, 9, null, ['prep']],
      [2, 'root', 9, 10249, null, []],
    ]);
    expect(roles({ cpuArch: 'ppc64le', bootMode: 'uefi', diskLabel: 'gpt' }).map((r) => r[1])).toEqual(['efi system partition', 'root']);
  });

  it('one parted call, in MiB, optimal alignment, "primary" as type (msdos) or name (gpt)', () => {
    const plan = planPartitions({ ...base, bootMode: 'uefi', diskLabel: 'gpt', swapMiB: 64, configdriveMiB: 2 });
    expect(partedArgs('/dev/sda', 'gpt', plan)).toEqual([
      '-a', 'optimal', '-s', '/dev/sda', '--', 'unit', 'MiB', 'mklabel', 'gpt',
      'mkpart', 'primary', 'fat32', '1', '201', 'set', '1', 'boot', 'on',
      'mkpart', 'primary', 'linux-swap', '201', '265',
      'mkpart', 'primary', '265', '267',
      'mkpart', 'primary', '267', '10507',
    ]);
    expect(layoutNeedsMiB(plan, 'gpt')).toBe(10508);
    expect(layoutNeedsMiB(planPartitions(base), 'msdos')).toBe(10241);
  });
});

describe('boot mode and disk label (IPA get_node_boot_mode / get_partition_table_type_from_specs)', () => {
  it('parses capabilities as dicts, JSON strings and key:value lists', () => {
    expect(parseCapabilities('boot_mode:uefi,disk_label:gpt')).toEqual({ boot_mode: 'uefi', disk_label: 'gpt' });
    expect(parseCapabilities('{"secure_boot": "true"}')).toEqual({ secure_boot: 'true' });
    expect(parseCapabilities({ a: 'b' })).toEqual({ a: 'b' });
    expect(parseCapabilities(undefined)).toEqual({});
  });

  it('secure boot ⇒ uefi; else image_info, instance_info, capabilities, driver_internal_info, the ramdisk', () => {
    expect(resolveBootMode(info({ deploy_boot_mode: 'bios' }), { instance_info: { capabilities: { secure_boot: 'true' } } }, 'bios')).toBe('uefi');
    expect(resolveBootMode(info({ deploy_boot_mode: 'bios' }), { properties: { capabilities: 'secure_boot:True' } }, 'uefi')).toBe('uefi');
    expect(resolveBootMode(info({ deploy_boot_mode: 'UEFI' }), null, 'bios')).toBe('uefi');
    expect(resolveBootMode(info(), { instance_info: { deploy_boot_mode: 'uefi' }, properties: { capabilities: 'boot_mode:bios' } }, 'bios')).toBe('uefi');
    expect(resolveBootMode(info(), { properties: { capabilities: 'boot_mode:uefi' }, driver_internal_info: { deploy_boot_mode: 'bios' } }, 'bios')).toBe('uefi');
    expect(resolveBootMode(info(), { driver_internal_info: { deploy_boot_mode: 'uefi' } }, 'bios')).toBe('uefi');
    expect(resolveBootMode(info({ deploy_boot_mode: 'weird' }), {}, 'uefi')).toBe('uefi');
    expect(resolveBootMode(info(), null, 'bios')).toBe('bios');
  });

  it('gpt for UEFI whatever disk_label says; else disk_label (image_info, instance_info, properties); msdos', () => {
    expect(resolveDiskLabel('uefi', info({ disk_label: 'msdos' }), null)).toBe('gpt');
    expect(resolveDiskLabel('bios', info({ disk_label: 'gpt' }), null)).toBe('gpt');
    expect(resolveDiskLabel('bios', info(), { instance_info: { capabilities: '{"disk_label": "gpt"}' }, properties: { capabilities: 'disk_label:msdos' } })).toBe('gpt');
    expect(resolveDiskLabel('bios', info(), { properties: { capabilities: 'disk_label:gpt' } })).toBe('gpt');
    expect(resolveDiskLabel('bios', info({ disk_label: 'dos' }), null)).toBe('msdos');
    expect(resolveDiskLabel('bios', info(), null)).toBe('msdos');
  });
});

describe('filesystems, sizes and UUIDs', () => {
  it('mkfs as ironic-lib utils.mkfs', () => {
    expect(mkfsCommand('swap', '/dev/sda2', 'swap1')).toEqual(['mkswap', ['-L', 'swap1', '/dev/sda2']]);
    expect(mkfsCommand('ext4', '/dev/sda1', 'ephemeral0')).toEqual(['mkfs', ['-t', 'ext4', '-F', '-L', 'ephemeral0', '/dev/sda1']]);
    expect(mkfsCommand('xfs', '/dev/sda1', 'ephemeral0')).toEqual(['mkfs', ['-t', 'xfs', '-L', 'ephemeral0', '/dev/sda1']]);
    expect(mkfsCommand('vfat', '/dev/sda1', 'efi-part')).toEqual(['mkfs', ['-t', 'vfat', '-n', 'efi-part', '/dev/sda1']]);
  });

  it('the virtual size from a qcow2 header or an uncompressed raw image\'s length', () => {
    const qcow = Buffer.alloc(512);
    qcow.writeUInt32BE(0x514649fb, 0);
    qcow.writeBigUInt64BE(48n * 1024n * 1024n, 24);
    expect(virtualSizeOf(qcow, null, 1_000_000)).toBe(48 * 1024 * 1024);
    expect(virtualSizeOf(qcow, 'gzip', null)).toBe(48 * 1024 * 1024);
    expect(virtualSizeOf(Buffer.alloc(512), null, 123456)).toBe(123456);
    expect(virtualSizeOf(Buffer.alloc(512), 'gzip', 123456)).toBeNull();
  });

  const dev = (name: string): BlockDevice => ({ name, kname: name.slice(5) } as BlockDevice);
  const blkid = (tags: Record<string, Record<string, string>>) =>
    new FakeHost({
      run: (cmd, args) => {
        const t = tags[args.at(-1)!];
        if (cmd !== 'blkid' || !t) return fail('', 2);
        return ok(`${Object.entries(t).map(([k, v]) => `${k}=${v}`).join('\n')}\n`);
      },
    });

  it('filesystem UUID, else PARTUUID (ironic-lib block_uuid)', async () => {
    const host = blkid({ '/dev/sda1': { UUID: 'fs-uuid', PART_ENTRY_UUID: 'part-uuid' }, '/dev/sda2': { PART_ENTRY_UUID: '1a2b3c4d-02' } });
    expect(await blockUuid(host, '/dev/sda1')).toBe('fs-uuid');
    expect(await blockUuid(host, '/dev/sda2')).toBe('1a2b3c4d-02');
  });

  it('get_partition_uuids with IPA\'s keys: efi key always (null in BIOS), PReP key only on ppc', async () => {
    const host = blkid({ '/dev/sda1': { UUID: 'ESP-1' }, '/dev/sda2': { UUID: 'root-2' }, '/dev/sdb1': { PART_ENTRY_UUID: 'prep-1' }, '/dev/sdb2': { UUID: 'root-b' } });
    const uefi = planPartitions({ ...base, bootMode: 'uefi', diskLabel: 'gpt' });
    const uuids = await partitionUuids(host, layoutFrom(uefi, new Map([[1, dev('/dev/sda1')], [2, dev('/dev/sda2')]])), 'x86_64');
    expect(uuids).toEqual({ partitions: { 'efi system partition': '/dev/sda1', root: '/dev/sda2' }, 'root uuid': 'root-2', 'efi system partition uuid': 'ESP-1' });
    expect(Object.keys(uuids)).toEqual(['partitions', 'root uuid', 'efi system partition uuid']);

    const ppc = planPartitions({ ...base, cpuArch: 'ppc64le' });
    expect(await partitionUuids(host, layoutFrom(ppc, new Map([[1, dev('/dev/sdb1')], [2, dev('/dev/sdb2')]])), 'ppc64le')).toEqual({
      partitions: { 'PReP Boot partition': '/dev/sdb1', root: '/dev/sdb2' },
      'root uuid': 'root-b',
      'efi system partition uuid': null,
      'PReP Boot partition uuid': 'prep-1',
    });
  });
});
