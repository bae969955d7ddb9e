// Booting an OS from a software RAID-1 root in BIOS mode, end to end in a VM with SeaBIOS and two
// disks (this host's kernel has no md). IPA installs GRUB for a BIOS software RAID only from a
// ramdisk that was itself booted in BIOS mode, so the ramdisk is PXE-booted by SeaBIOS here. As
// Ironic 21.4 drives a node with a software RAID target_raid_config and a BIOS whole-disk image:
// raid.create_configuration (MBR on each holder, the RAID partition at 1 MiB), prepare_image onto
// the array, then image.install_bootloader with get_partition_uuids' root uuid (the image's MBR
// signature): the agent takes the array's first partition as the root, chroots into it and runs
// the image's grub-install on every holder disk, then grub-mkconfig. Then the VM boots from the
// first disk, and once more from the second disk alone (the first one is gone): GRUB from that
// disk's own MBR and the image's initramfs start the array degraded.
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { ImageInfo } from '../../src/protocol/image-info.js';
import type { Node } from '../../src/protocol/steps.js';
import { readAt } from '../integration/support.js';
import { PARTITION_OS_MARKER, biosWholeDiskImage, type WholeDiskImage } from './support/partition-image.js';
import { StandaloneRun } from './support/standalone-vm.js';
import { startVm, type AccelChoice } from './support/vm.js';

const DISK_BYTES = 5 * 2 ** 30;
const MD_MAGIC = 0xa92b4efc;

const run = new StandaloneRun('raidbios', {
  mmdebstrap: 'mmdebstrap', sfdisk: 'fdisk', 'qemu-img': 'qemu-utils', 'mkfs.ext4': 'e2fsprogs',
});
let image: WholeDiskImage | null = null;
let accel: AccelChoice | null = null;

const log = (line: string) => console.log(`[e2e-raidbios ${new Date().toISOString().slice(11, 19)}] ${line}`);
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

interface MbrPartition {
  start: number;
  size: number;
  type: string;
}

function mbrPartitions(disk: string): MbrPartition[] {
  const t = JSON.parse(execFileSync('sfdisk', ['--json', disk], { encoding: 'utf8' })) as { partitiontable: { label: string; partitions: MbrPartition[] } };
  expect(t.partitiontable.label).toBe('dos');
  return t.partitiontable.partitions;
}

/** The md superblock of a metadata 1.2 member (what `mdadm --metadata=1` makes): 4 KiB into the partition. */
function mdSuperblock12(disk: string, p: MbrPartition): { magic: number; major: number; level: number; uuid: string } {
  const sb = readAt(disk, p.start * 512 + 4096, 256);
  return { magic: sb.readUInt32LE(0), major: sb.readUInt32LE(4), level: sb.readInt32LE(72), uuid: sb.subarray(16, 32).toString('hex') };
}

describe('Ferrum ramdisk: an OS boots from a software RAID-1 root (BIOS, two disks), also degraded', () => {
  beforeAll(async () => {
    ({ accel, built: image } = await run.setUpWith(biosWholeDiskImage(log)));
    log(`accelerator: ${accel!.accel}; whole-disk image ${(image!.bytes / 1e6).toFixed(0)} MB qcow2${image!.builtSeconds ? `, built in ${image!.builtSeconds.toFixed(0)} s` : ', cached'}`);
  }, 1_800_000);
  afterAll(() => run.tearDown(), 120_000);

  test('create_configuration, prepare_image onto md, install_bootloader: GRUB on both disks, boots from either', async () => {
    const n = run.net!;
    const img = image!;
    const disks = [join(run.runDir, 'disk0.raw'), join(run.runDir, 'disk1.raw')];
    for (const d of disks) execFileSync('truncate', ['-s', String(DISK_BYTES), d]);
    mkdirSync(join(n.httpRoot, 'images'), { recursive: true });
    symlinkSync(img.path, join(n.httpRoot, 'images/raid-os.qcow2'));

    const s = await run.boot(disks[0]!, accel!.accel, [disks[1]!], 'bios');
    const client = s.client;
    log(`agent up in ${s.upAfterS.toFixed(1)} s at ${s.vmIp}`);
    const fail = (err: Error) => {
      throw new Error(`${err.message}\n${run.diagnostics()}`);
    };
    const inventory = (await client.getHardwareInfo()) as { boot: { current_boot_mode: string } };
    expect(inventory.boot.current_boot_mode, 'the ramdisk itself booted in BIOS mode').toBe('bios');

    const node = {
      uuid: '5d0c2a47-8e1b-4f3a-9c6d-2b7e4f1a8c93',
      target_raid_config: { logical_disks: [{ size_gb: 'MAX', raid_level: '1', controller: 'software' }] },
      properties: { capabilities: 'boot_mode:bios' },
      instance_info: {},
      driver_internal_info: {},
    } as unknown as Node;
    const version = (await client.getCleanSteps(node, [])).hardware_manager_version;
    let t = Date.now();
    await client.executeCleanStep({ step: 'create_configuration', interface: 'raid', priority: 0, args: {} }, node, [], version, { timeoutMs: 600_000 }).catch(fail);
    log(`create_configuration in ${secs(Date.now() - t)}`);

    const info = {
      id: 'ferrum-e2e-raid-bios-os',
      urls: [`${n.httpUrl}/images/raid-os.qcow2`],
      disk_format: 'qcow2',
      container_format: 'bare',
      stream_raw_images: true,
      os_hash_algo: 'sha256',
      os_hash_value: img.sha256,
      checksum: null,
      image_type: 'whole-disk',
    } as unknown as ImageInfo;
    t = Date.now();
    const prepared = await client.prepareImage(info, null, { timeoutMs: 1_200_000 }).catch(fail);
    const message = prepared?.result ?? '';
    log(`prepare_image in ${secs(Date.now() - t)}: ${message}`);
    expect(message).toMatch(/written to device \/dev\/md\d+/);
    // A whole-disk image's "root uuid" is its MBR signature, as IPA reads it (4 bytes at 440).
    const uuids = (await client.getPartitionUuids()) as Record<string, string | null | undefined>;
    const rootUuid = uuids['root uuid']!;
    expect(rootUuid).toMatch(/^0x[0-9a-f]{8}$/);
    expect(rootUuid).not.toBe('0x00000000');

    // What Ironic's agent deploy sends for software RAID, even with a whole-disk image.
    t = Date.now();
    await client.installBootloader({ root_uuid: rootUuid, efi_system_part_uuid: null, prep_boot_part_uuid: null, target_boot_mode: 'bios' }, { timeoutMs: 1_200_000 }).catch(fail);
    log(`install_bootloader in ${secs(Date.now() - t)}`);
    await client.sync();
    await run.vm!.stop();

    // On each holder: an MBR whose boot code is GRUB's (boot.img names itself, and points at
    // core.img in the gap before the first partition), and one RAID-1 member (metadata 1.2) at 1 MiB.
    const arrays: string[] = [];
    for (const [i, d] of disks.entries()) {
      const parts = mbrPartitions(d);
      expect(parts.map((p) => p.start), `disk${i}: one RAID partition at 1 MiB`).toEqual([2048]);
      const sb = mdSuperblock12(d, parts[0]!);
      expect(sb.magic, `md superblock in disk${i}'s partition`).toBe(MD_MAGIC);
      expect(sb.level).toBe(1);
      arrays.push(sb.uuid);
      const mbr = readAt(d, 0, 512);
      expect(mbr.readUInt16LE(510)).toBe(0xaa55);
      expect(mbr.subarray(0, 440).includes(Buffer.from('GRUB')), `GRUB's boot code in disk${i}'s MBR`).toBe(true);
      // boot.img's kernel sector field (0x5c): where core.img starts, inside the 1 MiB gap.
      const coreSector = Number(mbr.readBigUInt64LE(0x5c));
      expect(coreSector).toBeGreaterThan(0);
      expect(coreSector).toBeLessThan(2048);
      expect(readAt(d, coreSector * 512, 512).some((b) => b !== 0), `core.img at sector ${coreSector} of disk${i}`).toBe(true);
    }
    expect(arrays[0]).toBe(arrays[1]);

    const markerRe = new RegExp(`${PARTITION_OS_MARKER} root=(\\S+) dev=(\\S+)`);
    const bootFromDisk = async (name: string, disk: string, extra: string[], mirrors: string) => {
      const tap = await n.addTap(`tap-${name}`);
      const vm = (run.vm = startVm({ name: `ferrum-raidbios-${name}`, mac: s.mac, net: n, tap, disk, extraDisks: extra, firmware: 'bios', accel: accel!.accel, memMiB: 1024, boot: 'disk',
        serialLog: join(run.runDir, `serial-${name}.log`), qemuLog: join(run.runDir, `qemu-${name}.log`) }));
      const at = await vm.waitForSerial(markerRe, 900_000).catch(fail);
      const serial = vm.serial();
      log(`${name}: booted in ${secs(at - vm.startedAt)}: ${markerRe.exec(serial)![0]}`);
      const [, root, dev] = markerRe.exec(serial)!;
      // SeaBIOS ran the MBR's boot code, which loaded GRUB's core.img from the gap.
      expect(serial).toMatch(/Booting from Hard Disk[\s\S]*GRUB loading/);
      // grub-mkconfig's menu entry (run by the agent in the image) names the root by UUID; the
      // initramfs mounted it from the array's first partition.
      expect(root).toBe(`UUID=${img.rootUuid}`);
      expect(dev).toMatch(/^\/dev\/md[\w/-]*p1$/);
      expect(serial).toMatch(new RegExp(`md/raid1:md\\d+: active with ${mirrors} mirrors`));
      await vm.exited;
    };

    await bootFromDisk('both', disks[0]!, [disks[1]!], '2 out of 2');
    // The second disk alone: its own MBR and core.img, a degraded array.
    await bootFromDisk('degraded', disks[1]!, [], '1 out of 2');
    run.passed = true;
  }, 3_600_000);
});
