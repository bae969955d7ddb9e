// Booting an OS from a software RAID-1 root in BIOS mode, end to end in a VM with SeaBIOS and two
// disks (this host's kernel has no md). IPA installs GRUB for a BIOS software RAID only from a
// ramdisk that was itself booted in BIOS mode, so the ramdisk is PXE-booted by SeaBIOS here. As
// Ironic 21.4 drives a node with a software RAID target_raid_config and a BIOS whole-disk image:
// raid.create_configuration, prepare_image onto the array, then image.install_bootloader with
// get_partition_uuids' root uuid (the image's MBR signature): the agent takes the array's first
// partition as the root, chroots into it and runs the image's grub-install on every holder disk,
// then grub-mkconfig. Twice, for both partition tables IPA puts on the holders in BIOS mode:
//  - msdos (the default): the RAID partition at 1 MiB, GRUB's core.img in the gap before it;
//  - gpt (capability disk_label:gpt, needed beyond 2 TiB): the RAID partition at 8 MiB, and
//    install_bootloader adds a BIOS boot partition before it on every holder for core.img.
// Each time the VM then boots from the first disk, and once more from the second disk alone (the
// first one is gone): GRUB from that disk's own MBR and the image's initramfs start the array
// degraded.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readAt } from '../helpers/device-read.js';
import { MD_MAGIC, mdSuperblock, mdSuperblockOffset, partitionTable } from './support/md-members.js';
import { biosWholeDiskImage, type WholeDiskImage } from './support/partition-image.js';
import { bootFromRaid, deployOntoSoftwareRaid } from './support/software-raid-deploy.js';
import { StandaloneRun } from './support/standalone-vm.js';
import type { AccelChoice } from './support/vm.js';

const DISK_BYTES = 5 * 2 ** 30;
const BIOS_BOOT_TYPE = '21686148-6449-6E6F-744E-656564454649';

for (const diskLabel of ['msdos', 'gpt'] as const) {
  const run = new StandaloneRun(`raidbios-${diskLabel}`, {
    mmdebstrap: 'mmdebstrap', sfdisk: 'fdisk', 'qemu-img': 'qemu-utils', 'mkfs.ext4': 'e2fsprogs',
  });
  let image: WholeDiskImage | null = null;
  let accel: AccelChoice | null = null;
  const log = (line: string) => console.log(`[e2e-raidbios-${diskLabel} ${new Date().toISOString().slice(11, 19)}] ${line}`);

  describe(`Ferrum ramdisk: an OS boots from a software RAID-1 root (BIOS, ${diskLabel} holders, two disks), also degraded`, () => {
    beforeAll(async () => {
      ({ accel, built: image } = await run.setUpWith(biosWholeDiskImage(log)));
      log(`accelerator: ${accel!.accel}; whole-disk image ${(image!.bytes / 1e6).toFixed(0)} MB qcow2${image!.builtSeconds ? `, built in ${image!.builtSeconds.toFixed(0)} s` : ', cached'}`);
    }, 1_800_000);
    afterAll(() => run.tearDown(), 120_000);

    test('create_configuration, prepare_image onto md, install_bootloader: GRUB on both disks, boots from either', async () => {
      const img = image!;
      const disks = [join(run.runDir, 'disk0.raw'), join(run.runDir, 'disk1.raw')];
      for (const d of disks) execFileSync('truncate', ['-s', String(DISK_BYTES), d]);

      const s = await run.boot(disks[0]!, accel!.accel, [disks[1]!], 'bios');
      log(`agent up in ${s.upAfterS.toFixed(1)} s at ${s.vmIp}`);
      const inventory = (await s.client.getHardwareInfo()) as { boot: { current_boot_mode: string } };
      expect(inventory.boot.current_boot_mode, 'the ramdisk itself booted in BIOS mode').toBe('bios');
      const capabilities = diskLabel === 'gpt' ? 'boot_mode:bios,disk_label:gpt' : 'boot_mode:bios';
      const rootUuid = await deployOntoSoftwareRaid({ run, client: s.client, image: img, bootMode: 'bios', capabilities, log });
      // The image's MBR signature: not zero, so install_bootloader goes on to GRUB.
      expect(rootUuid).not.toBe('0x00000000');
      await run.vm!.stop();

      // On each holder: one RAID-1 member (metadata 1.2), and GRUB's boot code in the (protective)
      // MBR, pointing at core.img: in the gap before the first partition (msdos) or at the start
      // of the BIOS boot partition (gpt).
      const arrays: string[] = [];
      for (const [i, d] of disks.entries()) {
        const parts = partitionTable(d, diskLabel === 'gpt' ? 'gpt' : 'dos');
        const biosBoot = parts.find((p) => p.type.toUpperCase() === BIOS_BOOT_TYPE);
        const raid = parts.filter((p) => p !== biosBoot);
        expect(raid.map((p) => p.start), `disk${i}: one RAID partition`).toEqual([diskLabel === 'gpt' ? 8 * 2048 : 2048]);
        const sb = mdSuperblock(d, mdSuperblockOffset(raid[0]!, '1.2'));
        expect(sb.magic, `md superblock in disk${i}'s partition`).toBe(MD_MAGIC);
        expect(sb.level).toBe(1);
        arrays.push(sb.uuid);
        const mbr = readAt(d, 0, 512);
        expect(mbr.readUInt16LE(510)).toBe(0xaa55);
        expect(mbr.subarray(0, 440).includes(Buffer.from('GRUB')), `GRUB's boot code in disk${i}'s MBR`).toBe(true);
        // boot.img's kernel sector field (0x5c): where core.img starts.
        const coreSector = Number(mbr.readBigUInt64LE(0x5c));
        if (diskLabel === 'gpt') {
          expect(biosBoot, `a BIOS boot partition on disk${i}: ${JSON.stringify(parts)}`).toBeDefined();
          expect(coreSector).toBe(biosBoot!.start);
        } else {
          expect(biosBoot).toBeUndefined();
          expect(coreSector).toBeGreaterThan(0);
          expect(coreSector).toBeLessThan(2048);
        }
        expect(readAt(d, coreSector * 512, 512).some((b) => b !== 0), `core.img at sector ${coreSector} of disk${i}`).toBe(true);
      }
      expect(arrays[0]).toBe(arrays[1]);

      // SeaBIOS ran the MBR's boot code, which loaded GRUB's core.img; grub-mkconfig's menu entry
      // (made by the agent in the image's chroot) names the root by UUID.
      const boot = { run, mac: s.mac, accel: accel!.accel, firmware: 'bios', image: img, rootPartition: 'p1', bootPath: /Booting from Hard Disk[\s\S]*GRUB loading/, log } as const;
      await bootFromRaid({ ...boot, name: 'both', disks, mirrors: '2 out of 2' });
      // The second disk alone: its own MBR and core.img, a degraded array.
      await bootFromRaid({ ...boot, name: 'degraded', disks: [disks[1]!], mirrors: '1 out of 2' });
      run.passed = true;
    }, 3_600_000);
  });
}
