// Booting an OS from a software RAID-1 root, end to end in a VM with OVMF and two disks (this
// host's kernel has neither md nor vfat). As Ironic 21.4 drives a node with a software RAID
// target_raid_config and a UEFI whole-disk image: raid.create_configuration, prepare_image onto the
// array, then image.install_bootloader with what get_partition_uuids reported. As IPA, the agent
// gives each holder disk a new ESP, mirrors them as a RAID-1 with the superblock at the end
// (metadata 1.0, so firmware reads plain FAT), moves the image's ESP onto it and writes an NVRAM
// entry per holder for the image's own loader. Then the VM boots from disk through that NVRAM
// until the deployed OS prints its marker with its root on the array; and once more from the
// second disk alone with empty NVRAM (the first disk is gone): firmware takes the fallback loader
// from that disk's ESP copy and the image's initramfs starts the array degraded.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { ImageInfo } from '../../src/protocol/image-info.js';
import type { Node } from '../../src/protocol/steps.js';
import { readAt } from '../integration/support.js';
import { PARTITION_OS_MARKER, wholeDiskImage, type WholeDiskImage } from './support/partition-image.js';
import { StandaloneRun } from './support/standalone-vm.js';
import { OVMF_VARS, startVm, type AccelChoice } from './support/vm.js';

const DISK_BYTES = 5 * 2 ** 30;
const ESP_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
const MD_MAGIC = 0xa92b4efc;

const run = new StandaloneRun('raidboot', {
  mmdebstrap: 'mmdebstrap', mdir: 'mtools', sfdisk: 'fdisk', sgdisk: 'gdisk', 'qemu-img': 'qemu-utils', 'mkfs.ext4': 'e2fsprogs', 'mkfs.vfat': 'dosfstools', 'grub-mkstandalone': 'grub-common',
});
let image: WholeDiskImage | null = null;
let accel: AccelChoice | null = null;

const log = (line: string) => console.log(`[e2e-raidboot ${new Date().toISOString().slice(11, 19)}] ${line}`);
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

interface GptPartition {
  start: number;
  size: number;
  type: string;
}

function gptPartitions(disk: string): GptPartition[] {
  const t = JSON.parse(execFileSync('sfdisk', ['--json', disk], { encoding: 'utf8' })) as { partitiontable: { label: string; partitions: GptPartition[] } };
  expect(t.partitiontable.label).toBe('gpt');
  return t.partitiontable.partitions;
}

/** The md superblock of a metadata 1.0 member: 8–12 KiB before the end of the partition, 4 KiB aligned. */
function mdSuperblock10(disk: string, p: GptPartition): { magic: number; major: number; level: number; uuid: string } {
  const end = (p.start + p.size) * 512;
  const at = Math.floor((end - 8192) / 4096) * 4096;
  const sb = readAt(disk, at, 256);
  return { magic: sb.readUInt32LE(0), major: sb.readUInt32LE(4), level: sb.readInt32LE(72), uuid: sb.subarray(16, 32).toString('hex') };
}

describe('Ferrum ramdisk: an OS boots from a software RAID-1 root (UEFI, two disks), also degraded', () => {
  beforeAll(async () => {
    ({ accel, built: image } = await run.setUpWith(wholeDiskImage(log)));
    log(`accelerator: ${accel!.accel}; whole-disk image ${(image!.bytes / 1e6).toFixed(0)} MB qcow2${image!.builtSeconds ? `, built in ${image!.builtSeconds.toFixed(0)} s` : ', cached'}`);
  }, 1_800_000);
  afterAll(() => run.tearDown(), 120_000);

  test('create_configuration, prepare_image onto md, install_bootloader: boots from the array, and from one disk alone', async () => {
    const n = run.net!;
    const img = image!;
    const disks = [join(run.runDir, 'disk0.raw'), join(run.runDir, 'disk1.raw')];
    for (const d of disks) execFileSync('truncate', ['-s', String(DISK_BYTES), d]);
    mkdirSync(join(n.httpRoot, 'images'), { recursive: true });
    symlinkSync(img.path, join(n.httpRoot, 'images/raid-os.qcow2'));

    const s = await run.boot(disks[0]!, accel!.accel, [disks[1]!]);
    const client = s.client;
    const varsFile = join(run.runDir, 'ferrum-raidboot-OVMF_VARS.fd');
    log(`agent up in ${s.upAfterS.toFixed(1)} s at ${s.vmIp}`);
    const fail = (err: Error) => {
      throw new Error(`${err.message}\n${run.diagnostics()}`);
    };

    const raidConfig = { logical_disks: [{ size_gb: 'MAX', raid_level: '1', controller: 'software' }] };
    const node = {
      uuid: '0b7e4bde-3f0c-4b57-8d51-5a3c1e2b9f20',
      target_raid_config: raidConfig,
      properties: { capabilities: 'boot_mode:uefi' },
      instance_info: {},
      driver_internal_info: {},
    } as unknown as Node;
    const version = (await client.getCleanSteps(node, [])).hardware_manager_version;
    let t = Date.now();
    await client.executeCleanStep({ step: 'create_configuration', interface: 'raid', priority: 0, args: {} }, node, [], version, { timeoutMs: 600_000 }).catch(fail);
    log(`create_configuration in ${secs(Date.now() - t)}`);

    const info = {
      id: 'ferrum-e2e-raid-os',
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
    // For a whole-disk image the "root uuid" is the disk identifier (msdos: 0x…), as IPA reports it.
    // For a whole-disk image the "root uuid" is the disk identifier as IPA reads it (the 4 bytes at
    // 440: for a GPT, the protective MBR's signature); Ironic takes it from get_partition_uuids
    // (root_uuid_or_disk_id).
    const uuids = (await client.getPartitionUuids()) as Record<string, string | null | undefined>;
    const rootUuid = uuids['root uuid']!;
    expect(rootUuid).toMatch(/^0x[0-9a-f]{8}$/);
    expect(message).toContain(`root_uuid=${rootUuid}`);

    // What Ironic's agent deploy sends for software RAID, even with a whole-disk image.
    t = Date.now();
    await client.installBootloader({ root_uuid: rootUuid, efi_system_part_uuid: uuids['efi system partition uuid'] ?? null, prep_boot_part_uuid: null, target_boot_mode: 'uefi' }, { timeoutMs: 1_200_000 }).catch(fail);
    log(`install_bootloader in ${secs(Date.now() - t)}`);
    await client.sync();
    await run.vm!.stop();

    // On each holder: an ESP before the RAID partition, both ESPs one RAID-1 (metadata 1.0) holding
    // the image's loader at the fallback path.
    const espUuids: string[] = [];
    for (const [i, d] of disks.entries()) {
      const parts = gptPartitions(d);
      const esp = parts.find((p) => p.type.toUpperCase() === ESP_TYPE);
      expect(esp, `an ESP on disk${i}: ${JSON.stringify(parts)}`).toBeDefined();
      const sb = mdSuperblock10(d, esp!);
      expect(sb.magic, `md superblock at the end of disk${i}'s ESP`).toBe(MD_MAGIC);
      expect(sb.level).toBe(1);
      espUuids.push(sb.uuid);
      const files = execFileSync('mdir', ['-/', '-b', '-i', `${d}@@${esp!.start * 512}`, '::/'], { encoding: 'utf8', env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } })
        .split('\n').map((l) => l.trim().toUpperCase()).filter(Boolean);
      log(`disk${i} ESP at ${esp!.start * 512}: ${files.join(' ')}`);
      expect(files).toContain('::/EFI/BOOT/BOOTX64.EFI');
    }
    expect(espUuids[0]).toBe(espUuids[1]);
    // One NVRAM entry per holder (labels as IPA's: "<label> (RAID, part<i>)"), UTF-16 in the store.
    const vars = readFileSync(varsFile);
    for (const i of [0, 1]) expect(vars.includes(Buffer.from(`(RAID, part${i})`, 'utf16le')), `an NVRAM entry for holder ${i}`).toBe(true);

    const markerRe = new RegExp(`${PARTITION_OS_MARKER} root=(\\S+) dev=(\\S+)`);
    const bootFromDisk = async (name: string, disk: string, extra: string[], vmVars: string, mirrors: string) => {
      const tap = await n.addTap(`tap-${name}`);
      const vm = (run.vm = startVm({ name: `ferrum-raidboot-${name}`, mac: s.mac, net: n, tap, disk, extraDisks: extra, varsFile: vmVars, accel: accel!.accel, memMiB: 1024, boot: 'disk',
        serialLog: join(run.runDir, `serial-${name}.log`), qemuLog: join(run.runDir, `qemu-${name}.log`) }));
      const at = await vm.waitForSerial(markerRe, 900_000).catch(fail);
      const serial = vm.serial();
      log(`${name}: booted in ${secs(at - vm.startedAt)}: ${markerRe.exec(serial)![0]}`);
      const [, root, dev] = markerRe.exec(serial)!;
      expect(root).toBe(`UUID=${img.rootUuid}`);
      // The root the initramfs mounted is a partition of an md array, and GRUB read the kernel
      // through md too (its root device names the array, e.g. mduuid/…,gpt2).
      expect(dev).toMatch(/^\/dev\/md[\w/-]*p2$/);
      expect(serial).toMatch(/GRUB \(the image's own EFI loader\): root is md/);
      // The kernel's md driver: the root array with both members, or degraded.
      expect(serial).toMatch(new RegExp(`md/raid1:md\\d+: active with ${mirrors} mirrors`));
      await vm.exited;
      return serial;
    };

    // Both disks, the NVRAM the agent wrote.
    await bootFromDisk('both', disks[0]!, [disks[1]!], varsFile, '2 out of 2');
    // The second disk alone, empty NVRAM: firmware's fallback path on that disk's ESP copy, and a
    // degraded array.
    const freshVars = join(run.runDir, 'degraded-OVMF_VARS.fd');
    copyFileSync(OVMF_VARS, freshVars);
    await bootFromDisk('degraded', disks[1]!, [], freshVars, '1 out of 2');
    run.passed = true;
  }, 3_600_000);
});
