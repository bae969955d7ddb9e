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
import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MD_MAGIC, mdSuperblock, mdSuperblockOffset, partitionTable } from './support/md-members.js';
import { wholeDiskImage, type WholeDiskImage } from './support/partition-image.js';
import { bootFromRaid, deployOntoSoftwareRaid } from './support/software-raid-deploy.js';
import { StandaloneRun } from './support/standalone-vm.js';
import { OVMF_VARS, type AccelChoice } from './support/vm.js';

const DISK_BYTES = 5 * 2 ** 30;
const ESP_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';

const run = new StandaloneRun('raidboot', {
  mmdebstrap: 'mmdebstrap', mdir: 'mtools', sfdisk: 'fdisk', sgdisk: 'gdisk', 'qemu-img': 'qemu-utils', 'mkfs.ext4': 'e2fsprogs', 'mkfs.vfat': 'dosfstools', 'grub-mkstandalone': 'grub-common',
});
let image: WholeDiskImage | null = null;
let accel: AccelChoice | null = null;

const log = (line: string) => console.log(`[e2e-raidboot ${new Date().toISOString().slice(11, 19)}] ${line}`);
describe('Ferrum ramdisk: an OS boots from a software RAID-1 root (UEFI, two disks), also degraded', () => {
  beforeAll(async () => {
    ({ accel, built: image } = await run.setUpWith(wholeDiskImage(log)));
    log(`accelerator: ${accel!.accel}; whole-disk image ${(image!.bytes / 1e6).toFixed(0)} MB qcow2${image!.builtSeconds ? `, built in ${image!.builtSeconds.toFixed(0)} s` : ', cached'}`);
  }, 1_800_000);
  afterAll(() => run.tearDown(), 120_000);

  test('create_configuration, prepare_image onto md, install_bootloader: boots from the array, and from one disk alone', async () => {
    const img = image!;
    const disks = [join(run.runDir, 'disk0.raw'), join(run.runDir, 'disk1.raw')];
    for (const d of disks) execFileSync('truncate', ['-s', String(DISK_BYTES), d]);

    const s = await run.boot(disks[0]!, accel!.accel, [disks[1]!]);
    const varsFile = join(run.runDir, 'ferrum-raidboot-OVMF_VARS.fd');
    log(`agent up in ${s.upAfterS.toFixed(1)} s at ${s.vmIp}`);
    const rootUuid = await deployOntoSoftwareRaid({ run, client: s.client, image: img, bootMode: 'uefi', log });
    // For a GPT image, IPA's disk identifier is the protective MBR's (zero) signature.
    expect(rootUuid).toBe('0x00000000');
    await run.vm!.stop();

    // On each holder: an ESP before the RAID partition, both ESPs one RAID-1 (metadata 1.0) holding
    // the image's loader at the fallback path.
    const espUuids: string[] = [];
    for (const [i, d] of disks.entries()) {
      const parts = partitionTable(d, 'gpt');
      const esp = parts.find((p) => p.type.toUpperCase() === ESP_TYPE);
      expect(esp, `an ESP on disk${i}: ${JSON.stringify(parts)}`).toBeDefined();
      const sb = mdSuperblock(d, mdSuperblockOffset(esp!, '1.0'));
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

    // GRUB (the image's own EFI loader) read the kernel through md: its root device names the array.
    const boot = { run, mac: s.mac, accel: accel!.accel, firmware: 'uefi', image: img, rootPartition: 'p2', bootPath: /GRUB \(the image's own EFI loader\): root is md/, log } as const;
    // Both disks, the NVRAM the agent wrote.
    await bootFromRaid({ ...boot, name: 'both', disks, varsFile, mirrors: '2 out of 2' });
    // The second disk alone, empty NVRAM: firmware's fallback path on that disk's ESP copy, and a
    // degraded array.
    const freshVars = join(run.runDir, 'degraded-OVMF_VARS.fd');
    copyFileSync(OVMF_VARS, freshVars);
    await bootFromRaid({ ...boot, name: 'degraded', disks: [disks[1]!], varsFile: freshVars, mirrors: '1 out of 2' });
    run.passed = true;
  }, 3_600_000);
});
