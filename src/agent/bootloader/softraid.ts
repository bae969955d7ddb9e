// Software RAID (md) specifics of install_bootloader, as IPA: restart the array so GRUB finds it,
// give GPT holder disks a BIOS boot partition for BIOS, or for UEFI build a RAID-1 ESP
// (/dev/md/esp, metadata 1.0 so firmware reads each member as a plain FAT) from new ESPs on the
// holder disks, moving the image's ESP there if it has one.
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';
import { findEfiPartitionNumber, mdArrays, mdComponents, parseLsblkPairs, partedTable, partitionPath, udevSettle } from './partitions.js';

/** IPA's raid_utils.ESP_SIZE_MIB. */
export const ESP_SIZE_MIB = 550;
export const MD_ESP = '/dev/md/esp';

export async function mdRestart(host: Host, md: string, log: Logger): Promise<void> {
  const members = await mdComponents(host, md);
  log.info({ md, members }, `restarting md device ${md}`);
  await host.run('mdadm', ['--stop', md], { timeoutMs: 120_000 });
  await host.run('mdadm', ['--assemble', md, ...members], { timeoutMs: 120_000 });
}

/** `sgdisk -F`: first usable sector of the largest free block, on the last line. */
async function firstFreeSector(host: Host, disk: string): Promise<string> {
  const { stdout } = await host.run('sgdisk', ['-F', disk], { timeoutMs: 60_000 });
  const last = stdout.trim().split('\n').pop()?.trim() ?? '';
  if (!/^\d+$/.test(last)) throw new Error(`sgdisk -F ${disk} gave no free sector: ${stdout.trim()}`);
  return `${last}s`;
}

async function partitionByPartlabel(host: Host, disk: string, label: string): Promise<string | null> {
  const { stdout } = await host.run('lsblk', ['-PbioKNAME,PARTLABEL,TYPE', disk], { timeoutMs: 30_000 });
  const row = parseLsblkPairs(stdout).find((r) => r['TYPE'] === 'part' && r['PARTLABEL'] === label);
  return row ? `/dev/${row['KNAME']}` : null;
}

/**
 * Prepares boot partitions on the holder disks of a RAID root device. Returns the RAID ESP for
 * UEFI, null for BIOS.
 */
export async function prepareBootPartitionsForSoftraid(
  host: Host,
  log: Logger,
  device: string,
  holders: readonly string[],
  efiPartition: string | null,
  targetBootMode: string,
): Promise<string | null> {
  if (targetBootMode === 'uefi') {
    if (await host.exists(MD_ESP)) {
      log.info(`${MD_ESP} exists already: using it`);
      return MD_ESP;
    }
    let source = efiPartition;
    if (!source) {
      const n = findEfiPartitionNumber(await partedTable(host, device));
      source = n ? await partitionPath(host, device, n) : null;
    }
    log.info({ holders }, 'creating EFI partitions on the software RAID holder disks');
    const parts: string[] = [];
    for (const [i, holder] of holders.entries()) {
      await host.assertMayDestroy(holder);
      const label = `uefi-holder-${i}`;
      const start = await firstFreeSector(host, holder);
      await host.run('sgdisk', ['-n', `0:${start}:+${ESP_SIZE_MIB}MiB`, '-t', '0:ef00', '-c', `0:${label}`, holder], { timeoutMs: 60_000 });
      await host.run('partprobe', [holder], { timeoutMs: 60_000 });
      await udevSettle(host);
      const part = await partitionByPartlabel(host, holder, label);
      if (!part) throw new Error(`the new EFI partition ${label} did not appear on ${holder}`);
      parts.push(part);
    }
    await host.run('mdadm', ['--create', MD_ESP, '--force', '--run', '--metadata=1.0', '--level', '1', '--raid-devices', String(parts.length), ...parts], {
      timeoutMs: 120_000,
    });
    if (source) {
      log.info({ from: source, to: MD_ESP }, 'moving the image ESP onto the RAID ESP');
      await host.run('cp', [source, MD_ESP], { timeoutMs: 600_000 });
      await host.run('wipefs', ['-a', source], { timeoutMs: 60_000 });
    } else {
      await host.run('mkfs.vfat', ['-n', 'efi-part', MD_ESP], { timeoutMs: 120_000 });
    }
    return MD_ESP;
  }
  if (targetBootMode === 'bios') {
    for (const [i, holder] of holders.entries()) {
      const table = await partedTable(host, holder);
      if (table?.label !== 'gpt') continue;
      if (table.partitions.some((p) => p.flags.includes('bios_grub'))) continue; // already there (a rerun)
      await host.assertMayDestroy(holder);
      log.info({ holder }, `creating a BIOS boot partition on ${holder}`);
      const start = await firstFreeSector(host, holder);
      await host.run('sgdisk', ['-n', `0:${start}:+2MiB`, '-t', '0:ef02', '-c', `0:bios-boot-part-${i}`, holder], { timeoutMs: 60_000 });
    }
  }
  return null;
}

/** MD_UUIDs of every md array (for dracut's rd.md.uuid=). */
export async function mdArrayUuids(host: Host): Promise<string[]> {
  const uuids: string[] = [];
  for (const md of await mdArrays(host)) {
    const res = await host.run('mdadm', ['--detail', '--export', md], { allowFailure: true, timeoutMs: 30_000 });
    const m = /^MD_UUID=(.+)$/m.exec(res.stdout);
    if (m && !uuids.includes(m[1]!.trim())) uuids.push(m[1]!.trim());
  }
  return uuids;
}
