// A real Debian bookworm root file system for boot loader tests: built once with mmdebstrap
// (minbase + linux-image-cloud-amd64 + grub-pc, GRUB's x86_64-efi modules for UEFI, and mdadm so
// its initramfs assembles a software RAID root) into a tarball cached under $FERRUM_CACHE_DIR or
// ~/.cache/ferrum, keyed by ROOTFS_VERSION; then unpacked onto a partition of a test loop device,
// with an fstab, GRUB defaults for a serial console and an init that prints a marker and powers
// off, so that booting the disk in QEMU proves the boot loader works. Building fails loudly: a
// test that needs the image never silently skips.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** Change this when the package set or the build command changes: the cache key. */
export const ROOTFS_VERSION = 'bookworm-minbase-cloudkernel-grubpc-grubefi-mdadm-v3';
export const ROOTFS_PACKAGES = ['linux-image-cloud-amd64', 'grub-pc', 'grub-efi-amd64-bin', 'initramfs-tools', 'mdadm'];

export function cacheDir(): string {
  return process.env['FERRUM_CACHE_DIR'] ?? join(homedir(), '.cache', 'ferrum');
}

export interface RootfsTarball {
  path: string;
  bytes: number;
  /** Seconds spent building it now (0 when it came from the cache). */
  builtSeconds: number;
}

async function hasCommand(cmd: string): Promise<boolean> {
  try {
    await exec('sh', ['-c', `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

/** The cached root file system tarball, built first when missing. Throws with mmdebstrap's output when the build fails. */
export async function rootfsTarball(): Promise<RootfsTarball> {
  const dir = cacheDir();
  const path = join(dir, `rootfs-${ROOTFS_VERSION}.tar.zst`);
  if (existsSync(path) && statSync(path).size > 0) return { path, bytes: statSync(path).size, builtSeconds: 0 };
  if (!(await hasCommand('mmdebstrap'))) {
    throw new Error('cannot build the bootable test image: mmdebstrap is not installed (scripts/install-deps.sh installs it)');
  }
  mkdirSync(dir, { recursive: true });
  // mmdebstrap picks the format from the name: keep .tar.zst at the end of the temporary name.
  const out = `${path}.partial-${process.pid}.tar.zst`;
  const mirror = process.env['FERRUM_DEBIAN_MIRROR'] ?? 'http://deb.debian.org/debian';
  const started = Date.now();
  const args = ['--variant=minbase', `--include=${ROOTFS_PACKAGES.join(',')}`, 'bookworm', out, mirror];
  const log: string[] = [];
  const code = await new Promise<number | null>((resolve) => {
    const p = spawn('mmdebstrap', args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    p.stdout.on('data', (c: Buffer) => log.push(c.toString()));
    p.stderr.on('data', (c: Buffer) => log.push(c.toString()));
    p.on('error', (err) => {
      log.push(String(err));
      resolve(-1);
    });
    p.on('exit', resolve);
  });
  if (code !== 0 || !existsSync(out)) {
    await rm(out, { force: true });
    throw new Error(`building the bootable test image with mmdebstrap failed (exit ${code}):\n${log.join('').slice(-4000)}`);
  }
  await rename(out, path);
  return { path, bytes: statSync(path).size, builtSeconds: (Date.now() - started) / 1000 };
}

export interface PopulateOptions {
  /** Printed by the image's init on the serial console when it boots. */
  marker: string;
  /** Leave GRUB out of the image (for the "image without grub" error path). */
  withoutGrub?: boolean;
}

/** GRUB defaults: serial console, no menu delay, our init (which prints the marker and powers off). */
export const GRUB_DEFAULTS = [
  'GRUB_DEFAULT=0',
  'GRUB_TIMEOUT=1',
  'GRUB_DISTRIBUTOR=Debian',
  'GRUB_CMDLINE_LINUX_DEFAULT=""',
  'GRUB_CMDLINE_LINUX="console=ttyS0,115200 init=/usr/local/sbin/ferrum-boot-marker panic=-1"',
  'GRUB_TERMINAL=serial',
  'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"',
  '',
].join('\n');

export function markerScript(marker: string): string {
  return [
    '#!/bin/sh',
    '# PID 1 of the test image: prove the root file system came up, then power off.',
    'mount -t proc proc /proc 2>/dev/null',
    // root= as the kernel was told, dev= the block device the initramfs mounted as / (an md
    // partition for a RAID root).
    `echo "${marker} root=$(sed -n 's/.*root=\\([^ ]*\\).*/\\1/p' /proc/cmdline) dev=$(awk '$2 == "/" { print $1; exit }' /proc/mounts)"`,
    'sync',
    'echo o > /proc/sysrq-trigger',
    'sleep 60',
    '',
  ].join('\n');
}

/** Makes an ext4 file system on `partition` and unpacks the root file system onto it. Returns its UUID. */
export async function populateRoot(partition: string, tarball: string, o: PopulateOptions): Promise<string> {
  await exec('mkfs.ext4', ['-q', '-F', '-L', 'ferrum-root', partition]);
  const uuid = (await exec('blkid', ['-s', 'UUID', '-o', 'value', partition])).stdout.trim();
  const mnt = await mkdtemp(join(tmpdir(), 'ferrum-populate-'));
  await exec('mount', [partition, mnt]);
  try {
    const excludes = o.withoutGrub ? ['--wildcards', '--exclude=./usr/sbin/grub*', '--exclude=./usr/bin/grub*', '--exclude=./usr/lib/grub'] : [];
    await exec('tar', ['--zstd', '-xpf', tarball, '-C', mnt, ...excludes], { maxBuffer: 64 * 1024 * 1024 });
    await writeFile(join(mnt, 'etc/fstab'), `UUID=${uuid}\t/\text4\terrors=remount-ro\t0\t1\n`);
    await mkdir(join(mnt, 'etc/default'), { recursive: true });
    await writeFile(join(mnt, 'etc/default/grub'), GRUB_DEFAULTS);
    await writeFile(join(mnt, 'etc/hostname'), 'ferrum-boot-test\n');
    await mkdir(join(mnt, 'usr/local/sbin'), { recursive: true });
    await writeFile(join(mnt, 'usr/local/sbin/ferrum-boot-marker'), markerScript(o.marker));
    await chmod(join(mnt, 'usr/local/sbin/ferrum-boot-marker'), 0o755);
  } finally {
    await exec('umount', [mnt]);
    await rmdir(mnt);
  }
  return uuid;
}

export interface QemuBoot {
  booted: boolean;
  output: string;
  seconds: number;
}

/** Boots a raw disk image under TCG with SeaBIOS (no KVM) and waits for `marker` on the serial console. */
export async function bootInQemu(file: string, marker: string, timeoutMs = 300_000): Promise<QemuBoot> {
  const started = Date.now();
  const args = ['-accel', 'tcg', '-m', '512', '-nographic', '-no-reboot', '-snapshot', '-nic', 'none', '-drive', `file=${file},format=raw,if=virtio`];
  const p = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  return new Promise<QemuBoot>((resolve) => {
    let done = false;
    const finish = (booted: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (p.exitCode === null) p.kill('SIGKILL');
      resolve({ booted, output, seconds: (Date.now() - started) / 1000 });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    const onData = (c: Buffer) => {
      output += c.toString('latin1');
      // The marker line as the script prints it (the kernel command line never contains it).
      if (new RegExp(`${marker} root=`).test(output)) setTimeout(() => finish(true), 200);
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    p.on('exit', () => finish(new RegExp(`${marker} root=`).test(output)));
    p.on('error', (err) => {
      output += String(err);
      finish(false);
    });
  });
}
