// The partition image the UEFI e2e test deploys: the boot loader tests' Debian root file system
// (test/helpers/bootable-image.ts: cloud kernel, GRUB for BIOS and x86_64-efi) as an ext4 file
// system image, converted to qcow2, with GRUB defaults for the serial console and an init that
// prints a marker and powers off. No loop devices, no mounts: unpacked into a directory and made
// with `mkfs.ext4 -d`. Cached under $FERRUM_CACHE_DIR/e2e, keyed by PARTITION_IMAGE_VERSION and
// the root file system's version.
import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GRUB_DEFAULTS, ROOTFS_VERSION, cacheDir, markerScript, rootfsTarball } from '../../helpers/bootable-image.js';

const exec = promisify(execFile);
export const PARTITION_IMAGE_VERSION = 'v1';
export const PARTITION_OS_MARKER = 'FERRUM-E2E-PARTITION-IMAGE-BOOTED';

export interface PartitionImage {
  /** qcow2 of the ext4 root file system */
  path: string;
  bytes: number;
  sha256: string;
  /** the file system's UUID: what prepare_image reports as root_uuid */
  rootUuid: string;
  /** the ext4 file system's size (what root_mb must hold) */
  virtualBytes: number;
  builtSeconds: number;
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export async function partitionImage(log: (line: string) => void): Promise<PartitionImage> {
  const dir = join(cacheDir(), 'e2e');
  mkdirSync(dir, { recursive: true });
  const base = join(dir, `partition-${ROOTFS_VERSION}-${PARTITION_IMAGE_VERSION}`);
  const path = `${base}.qcow2`;
  const meta = `${base}.json`;
  if (existsSync(path) && existsSync(meta)) {
    const m = JSON.parse(readFileSync(meta, 'utf8')) as Omit<PartitionImage, 'path' | 'builtSeconds'>;
    return { ...m, path, builtSeconds: 0 };
  }
  const started = Date.now();
  const tarball = await rootfsTarball();
  if (tarball.builtSeconds) log(`built the Debian root file system in ${tarball.builtSeconds.toFixed(0)} s`);
  const work = await mkdtemp(join(dir, 'partition-build-'));
  try {
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
    const partial = `${path}.partial-${process.pid}`;
    await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', ext4, partial]);
    const sum = await sha256(partial);
    await rename(partial, path);
    const m = { bytes: statSync(path).size, sha256: sum, rootUuid: uuid, virtualBytes: sizeMiB * 2 ** 20 };
    writeFileSync(meta, `${JSON.stringify(m)}\n`);
    return { ...m, path, builtSeconds: (Date.now() - started) / 1000 };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
