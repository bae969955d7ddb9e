// UEFI GRUB for a partition image, end to end: the part of image.install_bootloader that needs a
// mounted ESP (vfat) and EFI variables, neither of which this host's kernel has. A QEMU VM with
// OVMF PXE-boots Ferrum's ramdisk in standalone mode; the test has its agent write a Debian
// partition image (qcow2 of an ext4 root holding GRUB for x86_64-efi, support/partition-image.ts)
// with a GPT layout and a fresh ESP, then install the boot loader as Ironic does for partition
// images in UEFI mode (root_uuid + efi_system_part_uuid). Then, with the VM off, it reads the ESP
// from the disk file with mtools and the NVRAM from the VM's OVMF variable store, and boots the
// VM from its disk through that NVRAM until the deployed OS prints its marker.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { ImageInfo } from '../../src/protocol/image-info.js';
import { PARTITION_OS_MARKER, partitionImage, type PartitionImage } from './support/partition-image.js';
import { StandaloneRun } from './support/standalone-vm.js';
import { startVm, type AccelChoice } from './support/vm.js';

const DISK_GIB = 6;
const ESP_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';

const run = new StandaloneRun('uefi', { mmdebstrap: 'mmdebstrap', mdir: 'mtools', sfdisk: 'fdisk', 'qemu-img': 'qemu-utils', 'mkfs.ext4': 'e2fsprogs' });
let image: PartitionImage | null = null;
let accel: AccelChoice | null = null;

const log = (line: string) => console.log(`[e2e-uefi ${new Date().toISOString().slice(11, 19)}] ${line}`);
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

describe('Ferrum ramdisk: UEFI GRUB for a partition image, in a VM with OVMF', () => {
  beforeAll(async () => {
    ({ accel, built: image } = await run.setUpWith(partitionImage(log)));
    log(`accelerator: ${accel.accel} (${accel.reason}); partition image ${image.path} (${(image.bytes / 1e6).toFixed(0)} MB qcow2${image.builtSeconds ? `, built in ${image.builtSeconds.toFixed(0)} s` : ', cached'})`);
  }, 1_800_000);
  afterAll(() => run.tearDown(), 120_000);

  test('prepare_image (partition, gpt, uefi) + install_bootloader: GRUB in the ESP, an NVRAM entry, and the OS boots from disk', async () => {
    const n = run.net!;
    const img = image!;
    const disk = join(run.runDir, 'disk.raw');
    execFileSync('truncate', ['-s', `${DISK_GIB}G`, disk]);
    mkdirSync(join(n.httpRoot, 'images'), { recursive: true });
    symlinkSync(img.path, join(n.httpRoot, 'images/root.qcow2'));

    const s = await run.boot(disk, accel!.accel);
    const client = s.client;
    const varsFile = join(run.runDir, 'ferrum-uefi-OVMF_VARS.fd');
    log(`agent up in ${s.upAfterS.toFixed(1)} s at ${s.vmIp}`);

    // What Ironic 21.4 sends for a partition image in UEFI mode (agent-protocol.md §7).
    const rootMb = Math.ceil(img.virtualBytes / 2 ** 20) + 256;
    const info = {
      id: 'ferrum-e2e-partition',
      urls: [`${n.httpUrl}/images/root.qcow2`],
      disk_format: 'qcow2',
      container_format: 'bare',
      stream_raw_images: true,
      os_hash_algo: 'sha256',
      os_hash_value: img.sha256,
      checksum: null,
      image_type: 'partition',
      kernel: null,
      ramdisk: null,
      root_gb: 0,
      root_mb: rootMb,
      swap_mb: 0,
      ephemeral_mb: 0,
      ephemeral_format: 'ext4',
      preserve_ephemeral: false,
      deploy_boot_mode: 'uefi',
      boot_option: 'local',
      disk_label: 'gpt',
      configdrive: null,
    } as unknown as ImageInfo;
    const t0 = Date.now();
    const prepared = await client.prepareImage(info, null, { timeoutMs: 1_200_000 }).catch(run.fail);
    const message = prepared?.result ?? '';
    log(`prepare_image in ${secs(Date.now() - t0)}: ${message}`);
    const m = /root_uuid=(\S+) efi_system_partition_uuid=(\S+)/.exec(message);
    expect(m, message).not.toBeNull();
    const [, rootUuid, espUuid] = m!;
    expect(rootUuid).toBe(img.rootUuid);
    const uuids = await client.getPartitionUuids();
    expect(uuids).toMatchObject({ 'root uuid': rootUuid, 'efi system partition uuid': espUuid });

    const t1 = Date.now();
    await client.installBootloader({ root_uuid: rootUuid, efi_system_part_uuid: espUuid, target_boot_mode: 'uefi' }, { timeoutMs: 1_200_000 }).catch(run.fail);
    log(`install_bootloader in ${secs(Date.now() - t1)}`);
    await client.sync();
    await run.vm!.stop();

    // The ESP, read from the disk file: GRUB under its distributor's name and at the fallback path.
    const table = JSON.parse(execFileSync('sfdisk', ['--json', disk], { encoding: 'utf8' })) as { partitiontable: { label: string; sectorsize?: number; partitions: Array<{ start: number; type: string; uuid?: string }> } };
    expect(table.partitiontable.label).toBe('gpt');
    const esp = table.partitiontable.partitions.find((p) => p.type.toUpperCase() === ESP_TYPE);
    expect(esp, JSON.stringify(table)).toBeDefined();
    const espOffset = esp!.start * (table.partitiontable.sectorsize ?? 512);
    // efi_system_partition_uuid is the FAT volume's serial (as IPA reports it), not the GPT GUID.
    expect(execFileSync('blkid', ['-p', '-O', String(espOffset), '-o', 'value', '-s', 'UUID', disk], { encoding: 'utf8' }).trim()).toBe(espUuid);
    const espAt = `${disk}@@${espOffset}`;
    const files = execFileSync('mdir', ['-/', '-b', '-i', espAt, '::/'], { encoding: 'utf8', env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } })
      .split('\n').map((l) => l.trim().toUpperCase()).filter(Boolean);
    log(`ESP files: ${files.join(' ')}`);
    expect(files).toContain('::/EFI/BOOT/BOOTX64.EFI');
    expect(files).toContain('::/EFI/DEBIAN/GRUBX64.EFI');
    // The NVRAM entry grub-install made through efibootmgr: its description, UTF-16 in the store.
    expect(readFileSync(varsFile).includes(Buffer.from('debian', 'utf16le')), 'an NVRAM boot entry named "debian" in OVMF_VARS').toBe(true);

    // Power on from disk: no PXE ROM, no boot order from QEMU, OVMF follows its NVRAM.
    const tap = await n.addTap('tap-uefi2');
    const vm = (run.vm = startVm({ name: 'ferrum-uefi-disk', mac: s.mac, net: n, tap, disk, varsFile, accel: accel!.accel, memMiB: 1024, boot: 'disk',
      serialLog: join(run.runDir, 'serial-disk.log'), qemuLog: join(run.runDir, 'qemu-disk.log') }));
    const markerRe = new RegExp(`${PARTITION_OS_MARKER} root=(\\S+)`);
    const at = await vm.waitForSerial(markerRe, 600_000).catch(run.fail);
    const serial = vm.serial();
    const bootEntry = /BdsDxe: (?:loading|starting) (Boot[0-9A-F]{4} "[^"]*")/.exec(serial)?.[1] ?? 'not shown by the firmware';
    log(`booted from disk in ${secs(at - vm.startedAt)} via ${bootEntry}: ${markerRe.exec(serial)![0]}`);
    expect(markerRe.exec(serial)![1]).toBe(`UUID=${rootUuid}`);
    expect(serial).toMatch(/GRUB|grub/);
    if (bootEntry.startsWith('Boot')) expect(bootEntry).toMatch(/"debian"/);
    await vm.exited;
    run.passed = true;
  }, 3_600_000);
});
