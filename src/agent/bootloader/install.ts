// image.install_bootloader, as IPA 9.4.3 (agent-protocol.md §6):
//  1. When the ramdisk runs UEFI and has efibootmgr: find the ESP on the install device (partition
//     table, else efi_system_part_uuid), look for the image's own loaders on it and add NVRAM
//     entries (one per RAID member for md) → done. No ESP → DeviceNotFound.
//  2. root_uuid null or 0x00000000 (a whole-disk image) → done.
//  3. Otherwise GRUB from the image, in a chroot: find the root partition by UUID, mount it and
//     the ESP with /dev, /proc, /sys, /run (and efivarfs) under a private temporary directory,
//     grub-install onto the disk for BIOS (each holder disk for md) or into the ESP for UEFI (also
//     --removable, the fallback path), grub-mkconfig, ESP into the image's /etc/fstab. Skipped for
//     BIOS when the disk already carries a boot loader and no ESP/PReP was given.
// Failures become CommandExecutionError carrying the tool's stderr, unless ignore_bootloader_failure
// (parameter, else configuration) turns them into a logged success. Everything mounted is
// unmounted and the temporary directory removed whatever happens.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { AgentError, errors } from '../errors.js';
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';
import { chooseInstallDevice } from '../hardware/install-device.js';
import { isBootloaderLoaded } from './boot-sector.js';
import { chooseEfiLoaders, mountedEsp, mtoolsEsp, writeNvramEntries, type EfiBootEntry, type EspFiles, type NvramTarget } from './efi.js';
import { findImageGrub, grubBiosArgs, grubMkconfig, grubUefiArgs, runInChroot, type ImageGrub } from './grub.js';
import { addEspToFstab, ensureMtab, espFstabSpec, grubDefaultsWithMdUuids, writeFileAtomic } from './image-files.js';
import { MountSession } from './mounts.js';
import {
  findEfiPartitionNumber,
  findPartition,
  isMdDevice,
  lsblkRows,
  mdComponents,
  mdHolderDisks,
  parentDisk,
  partedTable,
  partitionNumber,
  partitionPath,
  rescanDevice,
} from './partitions.js';
import { mdArrayUuids, mdRestart, prepareBootPartitionsForSoftraid } from './softraid.js';

export interface InstallBootloaderParams {
  root_uuid?: string | null;
  efi_system_part_uuid?: string | null;
  prep_boot_part_uuid?: string | null;
  target_boot_mode?: 'bios' | 'uefi';
  ignore_bootloader_failure?: boolean | null;
}

export interface BootloaderDeps {
  host: Host;
  config: Pick<Config, 'ignoreBootloaderFailure' | 'diskWaitAttempts' | 'diskWaitDelay'>;
  /** The node as the conductor sent it (root device hints), if any. */
  node: Record<string, unknown> | null;
  log: Logger;
  /** Parent of the private temporary directory (default: os.tmpdir()). */
  tmpDir?: string;
  /** The install device when already known; otherwise chosen as IPA's get_os_install_device. */
  installDevice?: string;
}

type BootMode = 'bios' | 'uefi';

interface Ctx extends BootloaderDeps {
  currentBootMode: BootMode;
}

/** Runs install_bootloader; resolves to null (IPA's result) or throws an AgentError. */
export async function installBootloader(deps: BootloaderDeps, params: InstallBootloaderParams): Promise<null> {
  const { host, log } = deps;
  const targetBootMode = params.target_boot_mode ?? 'bios';
  const ignoreFailure = params.ignore_bootloader_failure ?? deps.config.ignoreBootloaderFailure;
  const device =
    deps.installDevice ??
    (await chooseInstallDevice(host, deps.node, log, { waitAttempts: deps.config.diskWaitAttempts, waitDelaySec: deps.config.diskWaitDelay })).name;
  // Boot loaders change the disk and the machine's NVRAM: only where destructive work is allowed.
  await host.assertMayDestroy(device);
  const ctx: Ctx = { ...deps, currentBootMode: (await host.exists('/sys/firmware/efi')) ? 'uefi' : 'bios' };
  log.info(
    { device, root_uuid: params.root_uuid ?? null, efi_system_part_uuid: params.efi_system_part_uuid ?? null, prep_boot_part_uuid: params.prep_boot_part_uuid ?? null, target_boot_mode: targetBootMode, current_boot_mode: ctx.currentBootMode, ignore_bootloader_failure: ignoreFailure },
    `installing the boot loader on ${device}`,
  );

  const failed = (err: unknown, what: string): void => {
    const agentErr = asCommandError(err, what);
    log.error({ err: agentErr }, `Error setting up bootloader. Error ${agentErr.details}`);
    if (!ignoreFailure) throw agentErr;
    log.warn(`ignoring the boot loader failure (ignore_bootloader_failure): ${agentErr.type}: ${agentErr.details}`);
  };

  try {
    if (await efiBootSetup(ctx, device, params.efi_system_part_uuid ?? null, targetBootMode)) return null;
  } catch (err) {
    failed(err, `Could not configure UEFI boot on device ${device}:`);
  }

  const rootUuid = params.root_uuid ?? null;
  if (rootUuid === null || rootUuid === '0x00000000') {
    log.info('Not using grub2-install since root UUID is not provided. Assuming a whole disk image');
    return null;
  }
  log.debug('Using grub2-install to set up boot files');
  try {
    await installGrub2(ctx, device, rootUuid, params.efi_system_part_uuid ?? null, params.prep_boot_part_uuid ?? null, targetBootMode);
  } catch (err) {
    failed(err, `Installing GRUB2 boot loader to device ${device} failed with`);
  }
  return null;
}

/** Agent errors (DeviceNotFound…) stay; anything else becomes CommandExecutionError with IPA's wording. */
function asCommandError(err: unknown, prefix: string): AgentError {
  if (err instanceof AgentError) return err;
  const text = err instanceof Error ? err.message : String(err);
  return new AgentError('CommandExecutionError', `${prefix} ${text}${prefix.endsWith('with') ? '.' : ''}`, { cause: err });
}

/** IPA's _efi_boot_setup: true when NVRAM entries for the image's loaders were made. */
async function efiBootSetup(ctx: Ctx, device: string, efiUuid: string | null, targetBootMode: string | null): Promise<boolean> {
  if (targetBootMode && ctx.currentBootMode !== targetBootMode) {
    ctx.log.warn(
      `Boot mode mismatch: target boot mode is ${targetBootMode}, current boot mode is ${ctx.currentBootMode}. Installing boot loader may fail or work incorrectly.`,
    );
  }
  if (ctx.currentBootMode !== 'uefi') return false;
  if (!(await ctx.host.hasCommand('efibootmgr'))) {
    ctx.log.warn('efibootmgr is not available in the ramdisk');
    return false;
  }
  return manageUefi(ctx, device, efiUuid);
}

interface EspLocation {
  partition: string;
  number: number;
}

/** The ESP of `device`: by the partition table's flags (trusting whole-disk images), else by UUID. */
async function locateEsp(ctx: Ctx, device: string, efiUuid: string | null): Promise<EspLocation | null> {
  const n = findEfiPartitionNumber(await partedTable(ctx.host, device));
  if (n !== null) {
    const partition = await partitionPath(ctx.host, device, n);
    if (partition) return { partition, number: n };
  }
  if (efiUuid) {
    const partition = await findPartition(ctx.host, device, efiUuid, ctx.log);
    const number = await partitionNumber(ctx.host, partition);
    if (number === null) throw errors.deviceNotFound(`Cannot detect the partition number of the device ${partition}`);
    return { partition, number };
  }
  return null;
}

/** Opens the ESP's files: with mtools when the ramdisk has them (no mount), else mounted read-only. */
async function withEspFiles<T>(ctx: Ctx, partition: string, fn: (esp: EspFiles) => Promise<T>): Promise<T> {
  const session = await MountSession.create(ctx.host, ctx.log, { parentDir: ctx.tmpDir });
  try {
    if (await ctx.host.hasCommand('mdir')) return await fn(mtoolsEsp(ctx.host, partition, session.dir));
    const mp = join(session.dir, 'esp');
    await session.mount(partition, mp, ['-o', 'ro']);
    return await fn(mountedEsp(mp));
  } finally {
    await session.close();
    if (session.problems.length) ctx.log.error({ problems: session.problems }, 'the ESP could not be unmounted cleanly');
  }
}

async function espLoaders(ctx: Ctx, partition: string): Promise<EfiBootEntry[]> {
  return withEspFiles(ctx, partition, async (esp) => {
    const files = await esp.list();
    ctx.log.debug({ files }, `files on the ESP ${partition}`);
    return chooseEfiLoaders(files, (rel) => esp.read(rel));
  });
}

async function partUuidOf(ctx: Ctx, partition: string): Promise<string | null> {
  const rows = await lsblkRows(ctx.host, partition).catch(() => []);
  return rows[0]?.['PARTUUID'] || null;
}

/** NVRAM targets for an ESP: its disk, or each member of a RAID-1 ESP. */
async function nvramTargets(ctx: Ctx, esp: EspLocation, mdEsp: boolean): Promise<NvramTarget[]> {
  if (!mdEsp) return [{ disk: await parentDisk(ctx.host, esp.partition), partNumber: esp.number, partUuid: await partUuidOf(ctx, esp.partition) }];
  const targets: NvramTarget[] = [];
  for (const [i, member] of (await mdComponents(ctx.host, esp.partition)).entries()) {
    const n = await partitionNumber(ctx.host, member);
    if (n === null) throw errors.deviceNotFound(`Could not extract the partition number from ${member}!`);
    targets.push({ disk: await parentDisk(ctx.host, member), partNumber: n, partUuid: await partUuidOf(ctx, member), labelSuffix: `(RAID, part${i})` });
  }
  return targets;
}

/** IPA's manage_uefi. */
async function manageUefi(ctx: Ctx, device: string, efiUuid: string | null): Promise<boolean> {
  ctx.log.debug('Attempting UEFI loader autodetection and NVRAM record setup.');
  await rescanDevice(ctx.host, device, ctx.log);
  let esp = await locateEsp(ctx, device, efiUuid);
  if (!esp) {
    throw errors.deviceNotFound(
      `No EFI partition could be detected on device ${device} and EFI partition UUID has not been recorded during deployment ` +
        '(which is often the case for whole disk images). Are you using a UEFI-compatible image?',
    );
  }
  await ctx.host.assertMayDestroy(esp.partition);
  const loaders = await espLoaders(ctx, esp.partition);
  if (loaders.length === 0) {
    ctx.log.warn('Empty EFI partition detected.');
    return false;
  }
  const md = await isMdDevice(ctx.host, device);
  if (md) {
    const holders = await mdHolderDisks(ctx.host, device);
    const mdEsp = await prepareBootPartitionsForSoftraid(ctx.host, ctx.log, device, holders, esp.partition, 'uefi');
    if (!mdEsp) throw errors.deviceNotFound(`no RAID ESP could be prepared for ${device}`);
    esp = { partition: mdEsp, number: 0 };
  }
  await writeNvramEntries(ctx.host, ctx.log, loaders, await nvramTargets(ctx, esp, md));
  return true;
}

/** Creates /dev/disk/by-uuid links udev would have made (grub-mkconfig uses them for root=UUID=); returns the undo. */
async function ensureDiskLinks(ctx: Ctx, partitions: readonly string[]): Promise<() => Promise<void>> {
  const created: string[] = [];
  const createdDirs: string[] = [];
  for (const partition of partitions) {
    const uuid = (await lsblkRows(ctx.host, partition).catch(() => []))[0]?.['UUID'];
    if (!uuid || !/^[A-Za-z0-9-]+$/.test(uuid)) continue;
    const link = `/dev/disk/by-uuid/${uuid}`;
    if ((await ctx.host.readlinkOrNull(link)) !== null || (await ctx.host.exists(link))) continue;
    for (const dir of ['/dev/disk', '/dev/disk/by-uuid']) {
      if (!(await ctx.host.exists(dir))) {
        await ctx.host.run('mkdir', [dir], { timeoutMs: 10_000 });
        createdDirs.unshift(dir);
      }
    }
    await ctx.host.run('ln', ['-s', partition, link], { timeoutMs: 10_000 });
    created.push(link);
    ctx.log.info({ link, partition }, `no udev link for ${partition}: created ${link} while GRUB runs`);
  }
  return async () => {
    for (const link of created) await ctx.host.run('rm', ['-f', link], { allowFailure: true, timeoutMs: 10_000 });
    for (const dir of createdDirs) await ctx.host.run('rmdir', [dir], { allowFailure: true, timeoutMs: 10_000 });
  };
}

/** IPA's _configure_grub: rd.md.uuid= for dracut images on md, then grub-mkconfig. */
async function configureGrub(ctx: Ctx, session: MountSession, grub: ImageGrub, md: boolean): Promise<void> {
  if (md) {
    const dracut = await runInChroot(ctx.host, session.root, '/bin/sh', ['-c', 'command -v dracut'], { allowFailure: true });
    if (dracut.exitCode === 0) {
      const uuids = await mdArrayUuids(ctx.host);
      const path = session.inRoot('etc/default/grub');
      const text = await fs.readFile(path, 'utf8').catch(() => null);
      if (text !== null && uuids.length) {
        ctx.log.debug({ uuids }, 'Setting rd.md.uuid kernel parameters');
        const updated = grubDefaultsWithMdUuids(text, uuids);
        if (updated !== text) await writeFileAtomic(path, updated);
      }
    }
  }
  await grubMkconfig(ctx.host, session.root, grub, ctx.log);
}

/**
 * IPA's _try_preserve_efi_assets for partition images carrying their ESP contents under
 * /boot/efi/EFI in the root file system: copy them onto the real ESP and point NVRAM at them.
 */
async function tryPreserveEfiAssets(ctx: Ctx, session: MountSession, device: string, efiUuid: string | null, efiPartition: string, grub: ImageGrub): Promise<boolean> {
  const assets = session.inRoot('boot/efi/EFI');
  if (!(await fs.stat(assets).catch(() => null))?.isDirectory()) return false;
  if (grub.install && grub.mkconfig) await configureGrub(ctx, session, grub, false);
  ctx.log.debug('EFI asset folder detected, attempting to preserve assets.');
  const save = join(session.dir, 'efi_loader');
  const espMount = session.inRoot('boot/efi');
  try {
    await ctx.host.run('cp', ['-a', assets, save], { timeoutMs: 600_000 });
    for (const flavour of ['grub2', 'grub']) {
      for (const file of ['grub.cfg', 'grubenv']) {
        const src = session.inRoot(`boot/${flavour}/${file}`);
        if (!(await fs.stat(src).catch(() => null))?.isFile()) continue;
        for (const dest of await fs.readdir(save)) {
          const target = join(save, dest, file);
          if ((await fs.stat(join(save, dest)).catch(() => null))?.isDirectory() && !(await fs.stat(target).catch(() => null))) {
            await fs.copyFile(src, target).catch((err: unknown) => ctx.log.warn({ err }, `could not copy ${file} next to the EFI assets`));
          }
        }
      }
    }
    await session.mount(efiPartition, espMount, ['-t', 'vfat']);
    await fs.mkdir(join(espMount, 'EFI'), { recursive: true });
    await ctx.host.run('cp', ['-a', `${save}/.`, join(espMount, 'EFI')], { timeoutMs: 600_000 });
    await session.unmount(espMount);
  } catch (err) {
    ctx.log.debug({ err }, 'Failed to preserve EFI assets');
    await session.unmount(espMount).catch(() => undefined);
    return false;
  } finally {
    await fs.rm(save, { recursive: true, force: true });
  }
  try {
    return await efiBootSetup(ctx, device, efiUuid, null);
  } catch (err) {
    ctx.log.debug({ err }, 'Exception encountered while attempting to setup the EFI loader from a root filesystem.');
    return false;
  }
}

async function espFstabEntry(ctx: Ctx, session: MountSession, efiPartition: string, efiUuid: string | null): Promise<void> {
  const row = (await lsblkRows(ctx.host, efiPartition).catch(() => []))[0];
  const spec = espFstabSpec(row?.['UUID'] || null, efiUuid, row?.['PARTUUID'] || null);
  if (spec) await addEspToFstab(session.root, spec, ctx.log);
}

/** IPA's _install_grub2. */
async function installGrub2(ctx: Ctx, installDevice: string, rootUuid: string, efiUuid: string | null, prepUuid: string | null, targetBootMode: string): Promise<void> {
  const { host, log } = ctx;
  let device = installDevice;
  log.debug(`Installing GRUB2 bootloader on device ${device}`);
  // Found before an md restart: the partition may disappear for a moment.
  const rootPartition = await findPartition(host, device, rootUuid, log);
  const md = await isMdDevice(host, device);
  if (md) {
    await mdRestart(host, device, log);
    await rescanDevice(host, device, log);
  } else if (!efiUuid && !prepUuid && (await isBootloaderLoaded(host, device, ctx.currentBootMode, log))) {
    log.info(`Skipping installation of bootloader on device ${device} as it is already marked bootable.`);
    return;
  }

  const session = await MountSession.create(host, log, { parentDir: ctx.tmpDir });
  const undo: Array<() => Promise<void>> = [];
  let failure: unknown = null;
  try {
    let efiPartition: string | null = null;
    if (efiUuid) efiPartition = await findPartition(host, device, efiUuid, log);
    else if (targetBootMode === 'uefi' && !md) {
      // Beyond IPA: a whole-disk image deployed for UEFI brings its ESP without naming it.
      const n = findEfiPartitionNumber(await partedTable(host, device));
      if (n !== null) efiPartition = await partitionPath(host, device, n);
      if (efiPartition) log.info({ esp: efiPartition }, `using the ESP found on ${device}`);
    }
    let holders: string[] = [];
    if (md) {
      holders = await mdHolderDisks(host, device);
      efiPartition = await prepareBootPartitionsForSoftraid(host, log, device, holders, efiPartition, targetBootMode);
    }
    // For POWER, GRUB goes straight onto the PReP partition.
    if (prepUuid) device = await findPartition(host, device, prepUuid, log);
    const disks = md ? holders : [device];
    for (const d of [rootPartition, ...disks, ...(efiPartition ? [efiPartition] : [])]) await host.assertMayDestroy(d);

    await session.mountRootForChroot(rootPartition);
    undo.push(await ensureMtab(session.root, log));
    undo.push(await ensureDiskLinks(ctx, [rootPartition, ...(efiPartition ? [efiPartition] : [])]));
    const grub = await findImageGrub(session.root);
    log.info({ grub }, grub.install ? `the image has ${grub.install}` : 'the image has no grub-install');
    const espMount = session.inRoot('boot/efi');

    if (!md && efiPartition) {
      if (await tryPreserveEfiAssets(ctx, session, device, efiUuid, efiPartition, grub)) {
        await espFstabEntry(ctx, session, efiPartition, efiUuid);
        return;
      }
      log.debug('No EFI assets were preserved for setup or the ramdisk was unable to complete the setup. falling back to bootloader installation from deployed image.');
    }

    // Partitions the image mounts from its fstab (e.g. an ESP holding grubenv): GRUB may need them.
    const mountAll = await runInChroot(host, session.root, '/bin/sh', ['-c', 'mount -a -t vfat'], { allowFailure: true });
    if (mountAll.exitCode !== 0) log.warn({ stderr: mountAll.stderr.trim() }, 'mounting the vfat file systems of the image fstab failed');

    if (efiPartition) {
      log.warn(`GRUB2 will be installed for UEFI on efi partition ${efiPartition} using the install command which does not place Secure Boot signed binaries.`);
      if (!(await session.isMounted(espMount))) await session.mount(efiPartition, espMount);
      let installed = false;
      if (grub.install) {
        for (const removable of [false, true]) {
          const res = await runInChroot(host, session.root, grub.install, grubUefiArgs({ removable, ramdiskUefi: ctx.currentBootMode === 'uefi' }), { allowFailure: true });
          if (res.exitCode === 0) installed = true;
          else log.warn({ stderr: res.stderr.trim() }, `Ignoring GRUB2 boot loader installation failure${removable ? ' (--removable)' : ''}: exit ${res.exitCode}`);
        }
      }
      // No GRUB (or it failed): the image's own loader on the ESP, with an NVRAM entry when we can write one.
      const loaders = await chooseEfiLoaders(await mountedEsp(espMount).list(), (rel) => mountedEsp(espMount).read(rel));
      if (loaders.length === 0) {
        throw new Error(
          grub.install
            ? `grub-install for UEFI failed and the ESP ${efiPartition} holds no EFI boot loader`
            : `the image has no grub-install/grub2-install and its ESP ${efiPartition} holds no EFI boot loader`,
        );
      }
      if (!installed && ctx.currentBootMode === 'uefi' && (await host.hasCommand('efibootmgr'))) {
        const number = await partitionNumber(host, efiPartition);
        const esp = { partition: efiPartition, number: number ?? 0 };
        await writeNvramEntries(host, log, loaders, await nvramTargets(ctx, esp, md));
      } else if (!installed) {
        log.warn(
          { loaders: loaders.map((l) => l.loader) },
          'GRUB was not installed and no NVRAM entry can be written from this ramdisk: the machine boots only if its firmware finds the image loader on its own (\\EFI\\BOOT fallback path)',
        );
      }
    } else {
      if (!grub.install) {
        throw new Error(
          'the deployed image has no grub-install or grub2-install (looked in /usr/sbin, /sbin, /usr/bin and /bin): it cannot be made bootable in BIOS mode. Install GRUB in the image, or set ignore_bootloader_failure.',
        );
      }
      log.info({ disks }, `GRUB2 will be installed on disks ${disks.join(', ')}`);
      for (const disk of disks) {
        await runInChroot(host, session.root, grub.install, grubBiosArgs(disk));
        log.info(`GRUB2 successfully installed on device ${disk}`);
      }
    }

    if (grub.mkconfig) await configureGrub(ctx, session, grub, md);
    else log.warn('the image has no grub-mkconfig: its boot menu is left as it is');
    if (efiPartition && (await session.isMounted(espMount))) await espFstabEntry(ctx, session, efiPartition, efiUuid);
    log.info(`GRUB2 successfully installed on ${device}`);
  } catch (err) {
    failure = err;
    throw err;
  } finally {
    for (const fn of undo.reverse()) {
      await fn().catch((err: unknown) => log.error({ err }, 'could not restore the image after the boot loader installation'));
    }
    await session.close();
    if (session.problems.length) {
      const msg = `could not unmount ${session.dir} cleanly: ${session.problems.join('; ')}`;
      log.error({ problems: session.problems }, msg);
      // Don't hide the real failure; but a success whose writes may not have reached the disk is none.
      if (failure === null) throw new AgentError('CommandExecutionError', `Installing GRUB2 boot loader to device ${installDevice}: ${msg}`);
    }
  }
}
