// The images the VM tests deploy, from the boot loader tests' Debian root file system
// (test/helpers/bootable-image.ts: cloud kernel, GRUB for BIOS and x86_64-efi, mdadm): the
// partition image (UEFI partition test) is that root as an ext4 file system image with GRUB
// defaults for the serial console and an init that prints a marker and powers off; the whole-disk
// image (software RAID boot tests) puts it behind a GPT and an ESP (UEFI), or an MBR (BIOS). No
// loop devices, no mounts: unpacked into a directory and made with `mkfs.ext4 -d`. All are qcow2,
// cached under $FERRUM_CACHE_DIR/e2e, keyed by their versions and the root file system's.
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GRUB_DEFAULTS, ROOTFS_VERSION, cacheDir, markerScript, rootfsTarball } from '../../helpers/bootable-image.js';

const exec = promisify(execFile);
export const PARTITION_IMAGE_VERSION = 'v2';
export const PARTITION_OS_MARKER = 'FERRUM-E2E-PARTITION-IMAGE-BOOTED';

/** What every cached image has: the qcow2, its size and digest, and how long building it took now. */
interface CachedImage {
  path: string;
  bytes: number;
  sha256: string;
  /** Seconds spent building it now (0 when it came from the cache). */
  builtSeconds: number;
}

/** qcow2 of the ext4 root file system */
export interface PartitionImage extends CachedImage {
  /** the file system's UUID: what prepare_image reports as root_uuid */
  rootUuid: string;
  /** the ext4 file system's size (what root_mb must hold) */
  virtualBytes: number;
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * `<name>.qcow2` in the cache with its facts in `<name>.json`; when missing, `build` makes a raw
 * image in a scratch directory (removed afterwards), which is converted to qcow2 and digested.
 */
async function cachedQcow2<F extends object>(name: string, build: (work: string) => Promise<{ raw: string; facts: F }>): Promise<F & CachedImage> {
  const dir = join(cacheDir(), 'e2e');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.qcow2`);
  const meta = join(dir, `${name}.json`);
  if (existsSync(path) && existsSync(meta)) {
    const m = JSON.parse(readFileSync(meta, 'utf8')) as F & Omit<CachedImage, 'path' | 'builtSeconds'>;
    return { ...m, path, builtSeconds: 0 };
  }
  const started = Date.now();
  const work = await mkdtemp(join(dir, `${name}-build-`));
  try {
    const { raw, facts } = await build(work);
    const partial = `${path}.partial-${process.pid}`;
    await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, partial]);
    const sum = await sha256(partial);
    await rename(partial, path);
    const m = { ...facts, bytes: statSync(path).size, sha256: sum };
    writeFileSync(meta, `${JSON.stringify(m)}\n`);
    return { ...m, path, builtSeconds: (Date.now() - started) / 1000 };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export async function partitionImage(log: (line: string) => void): Promise<PartitionImage> {
  return cachedQcow2(`partition-${ROOTFS_VERSION}-${PARTITION_IMAGE_VERSION}`, async (work) => {
    const tarball = await rootfsTarball();
    if (tarball.builtSeconds) log(`built the Debian root file system in ${tarball.builtSeconds.toFixed(0)} s`);
    const root = join(work, 'root');
    await mkdir(root);
    await exec('tar', ['--zstd', '-xpf', tarball.path, '-C', root], { maxBuffer: 64 << 20 });
    const uuid = randomUUID();
    await writeFile(join(root, 'etc/fstab'), `UUID=${uuid}\t/\text4\terrors=remount-ro\t0\t1\n`);
    await mkdir(join(root, 'etc/default'), { recursive: true });
    await writeFile(join(root, 'etc/default/grub'), GRUB_DEFAULTS);
    await writeFile(join(root, 'etc/hostname'), 'ferrum-partition-image\n');
    await mkdir(join(root, 'usr/local/sbin'), { recursive: true });
    await writeFile(join(root, 'usr/local/sbin/ferrum-boot-marker'), markerScript(PARTITION_OS_MARKER));
    await chmod(join(root, 'usr/local/sbin/ferrum-boot-marker'), 0o755);
    // Room for GRUB's files and the initramfs update grub-install may trigger.
    const usedMiB = Number((await exec('du', ['-s', '-m', '-x', root])).stdout.split('\t')[0]);
    const sizeMiB = Math.ceil((usedMiB * 1.3 + 128) / 64) * 64;
    const ext4 = join(work, 'root.ext4');
    await exec('mkfs.ext4', ['-q', '-F', '-L', 'ferrum-root', '-U', uuid, '-d', root, ext4, `${sizeMiB}M`]);
    return { raw: ext4, facts: { rootUuid: uuid, virtualBytes: sizeMiB * 2 ** 20 } };
  });
}

/** The partition image's ext4 file system as a raw file in `work`: what the whole-disk images put behind their table. */
async function rawRootFs(work: string, log: (line: string) => void): Promise<{ part: PartitionImage; ext4: string }> {
  const part = await partitionImage(log);
  const ext4 = join(work, 'root.ext4');
  await exec('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', part.path, ext4]);
  return { part, ext4 };
}

export const WHOLE_DISK_IMAGE_VERSION = 'uefi-v1';
export const BIOS_WHOLE_DISK_IMAGE_VERSION = 'bios-v1';

/** qcow2 of the whole disk: GPT, an ESP at 1 MiB, the root after it (UEFI); or an MBR and the root at 1 MiB (BIOS) */
export interface WholeDiskImage extends CachedImage {
  /** the root file system's UUID (what the booted kernel's root= must name) */
  rootUuid: string;
}

/** GRUB's config inside the image's own EFI loader: find the root by its UUID (on md too) and boot it. */
function embeddedGrubConfig(rootUuid: string): string {
  return [
    'serial --unit=0 --speed=115200',
    'terminal_input serial',
    'terminal_output serial',
    'insmod part_gpt',
    'insmod part_msdos',
    'insmod mdraid1x',
    'insmod ext2',
    `search --no-floppy --fs-uuid --set=root ${rootUuid}`,
    'echo "GRUB (the image\'s own EFI loader): root is $root"',
    `linux /vmlinuz root=UUID=${rootUuid} ro console=ttyS0,115200 init=/usr/local/sbin/ferrum-boot-marker panic=-1`,
    'initrd /initrd.img',
    'boot',
    '',
  ].join('\n');
}

/**
 * The same root file system as a UEFI whole-disk image, as cloud images are made: GPT, an ESP
 * holding the image's own loader at the fallback path (a standalone GRUB whose embedded config
 * finds the root by UUID, through md if it has to), and the root. For software RAID,
 * image.install_bootloader moves that ESP onto a RAID-1 ESP over the holder disks, as IPA does.
 * Built without loop devices or mounts: mkfs.vfat + mtools for the ESP, sgdisk and dd for the disk.
 */
export async function wholeDiskImage(log: (line: string) => void): Promise<WholeDiskImage> {
  return cachedQcow2(`whole-disk-${ROOTFS_VERSION}-${PARTITION_IMAGE_VERSION}-${WHOLE_DISK_IMAGE_VERSION}`, async (work) => {
    const { part, ext4 } = await rawRootFs(work, log);
    const MiB = 2 ** 20;
    const espMiB = 64;
    const cfg = join(work, 'grub.cfg');
    await writeFile(cfg, embeddedGrubConfig(part.rootUuid));
    const loader = join(work, 'BOOTX64.EFI');
    await exec('grub-mkstandalone', ['-O', 'x86_64-efi', '-o', loader, '--modules=part_gpt part_msdos mdraid1x ext2 search serial linux', `boot/grub/grub.cfg=${cfg}`]);
    const esp = join(work, 'esp.fat');
    await exec('mkfs.vfat', ['-C', '-n', 'IMAGE-ESP', esp, String(espMiB * 1024)]);
    const mt = { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } };
    await exec('mmd', ['-i', esp, '::/EFI', '::/EFI/BOOT'], mt);
    await exec('mcopy', ['-i', esp, loader, '::/EFI/BOOT/BOOTX64.EFI'], mt);
    const raw = join(work, 'disk.raw');
    const rootStart = (1 + espMiB) * MiB;
    await exec('truncate', ['-s', String(rootStart + part.virtualBytes + MiB), raw]);
    await exec('sgdisk', ['-n', `1:2048:+${espMiB}M`, '-t', '1:ef00', '-c', '1:EFI system', '-n', `2:${rootStart / 512}:0`, '-t', '2:8300', '-c', '2:root', raw]);
    await exec('dd', [`if=${esp}`, `of=${raw}`, 'bs=1M', 'seek=1', 'conv=notrunc', 'status=none']);
    await exec('dd', [`if=${ext4}`, `of=${raw}`, 'bs=1M', `seek=${rootStart / MiB}`, 'conv=notrunc,sparse', 'status=none']);
    return { raw, facts: { rootUuid: part.rootUuid } };
  });
}

/**
 * The same root file system as a BIOS whole-disk image: an MBR (random disk signature) and the
 * root as its first partition at 1 MiB, no boot loader. For software RAID on BIOS,
 * image.install_bootloader installs the image's own GRUB onto every holder disk from a chroot, as
 * IPA does: that is what makes it bootable.
 */
export async function biosWholeDiskImage(log: (line: string) => void): Promise<WholeDiskImage> {
  return cachedQcow2(`whole-disk-${ROOTFS_VERSION}-${PARTITION_IMAGE_VERSION}-${BIOS_WHOLE_DISK_IMAGE_VERSION}`, async (work) => {
    const { part, ext4 } = await rawRootFs(work, log);
    const MiB = 2 ** 20;
    const raw = join(work, 'disk.raw');
    await exec('truncate', ['-s', String(MiB + part.virtualBytes), raw]);
    execFileSync('sfdisk', ['-q', raw], { input: 'label: dos\nstart=2048, type=83, bootable\n' });
    await exec('dd', [`if=${ext4}`, `of=${raw}`, 'bs=1M', 'seek=1', 'conv=notrunc,sparse', 'status=none']);
    return { raw, facts: { rootUuid: part.rootUuid } };
  });
}
