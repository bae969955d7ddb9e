// image.install_bootloader against a real, bootable Debian bookworm image (agent-protocol.md §6,
// §7.5, §10): a real agent process limited to a test loop device, called through the conductor's
// AgentClient as Ironic 21.4.4 calls it. BIOS on an msdos disk (boot code in the MBR, core image
// in the gap after it) and on GPT (core image in the BIOS boot partition); grub.cfg names the root
// UUID; nothing stays mounted; the disk really boots under QEMU/SeaBIOS (TCG) into the image's
// init, which prints a marker. Error paths: unknown root UUID, an image without GRUB, and
// ignore_bootloader_failure (parameter and configuration).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeSync, constants as fsc, openSync, readdirSync, readFileSync, existsSync } from 'node:fs';
import { mkdtemp, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { createLoopDevice, sh, type LoopDevice } from '../helpers/loop-device.js';
import { freePort, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { bootInQemu, populateRoot, rootfsTarball, type RootfsTarball } from '../helpers/bootable-image.js';
import { AgentClient, AgentCommandError } from '../../src/conductor/agent-client.js';
import { BASE_ARGS, commandsRun, destroyLoop, partitionNodes, readAt, run, waitFor } from './support.js';

const MiB = 1024 * 1024;
/** At least 4 GiB: without root device hints the agent installs onto the smallest disk of ≥ 4 GiB (IPA). */
const DISK_MIB = 4096;
const GRUB_BOOT_IMG = '/usr/lib/grub/i386-pc/boot.img';

let tarball: RootfsTarball;
const started = Date.now();

function sha(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** The boot.img code GRUB puts in the first sector: identical to the image's boot.img outside its patched fields. */
function expectGrubBootSector(sector: Buffer, bootImg: Buffer): void {
  expect(sector.length).toBe(512);
  expect(sector.subarray(0, 440).some((b) => b !== 0)).toBe(true);
  expect([sector[510], sector[511]]).toEqual([0x55, 0xaa]);
  expect(sector.subarray(0, 2).toString('hex')).toBe(bootImg.subarray(0, 2).toString('hex')); // jmp over the BPB
  expect(sector.subarray(0, 440).includes(Buffer.from('GRUB '))).toBe(true);
  // The code after the variables and the patched boot drive check (0x68…0x1b7) is boot.img byte for byte.
  expect(sector.subarray(0x68, 0x1b8).equals(bootImg.subarray(0x68, 0x1b8))).toBe(true);
}

/** GRUB's core image starts with diskboot.img: compare its code (the blocklist at the end is patched). */
function expectCoreImage(first: Buffer, diskboot: Buffer): void {
  expect(first.length).toBe(512);
  expect(first.subarray(0, 0x100).equals(diskboot.subarray(0, 0x100))).toBe(true);
}

function mountsOf(needle: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(needle));
}

/** Opening a block device with O_EXCL fails with EBUSY while it is mounted (or otherwise claimed). */
function notBusy(path: string): boolean {
  try {
    closeSync(openSync(path, fsc.O_RDONLY | fsc.O_EXCL));
    return true;
  } catch {
    return false;
  }
}

function bootloaderTempDirs(): string[] {
  return readdirSync(tmpdir()).filter((n) => n.startsWith('ferrum-bootloader-'));
}

async function expectNothingLeftMounted(disk: LoopDevice, tempDirsBefore: string[]): Promise<void> {
  expect(mountsOf('ferrum-bootloader-')).toEqual([]);
  expect(mountsOf(`${disk.path}p`)).toEqual([]);
  for (const p of partitionNodes(disk)) expect(notBusy(`/dev/${p}`), `/dev/${p} busy`).toBe(true);
  expect(bootloaderTempDirs().filter((d) => !tempDirsBefore.includes(d))).toEqual([]);
}

/** Reads files of an ext4 partition with debugfs (no mount: the test cannot leave anything mounted either). */
async function catFromExt4(partition: string, path: string): Promise<string | null> {
  const res = await sh('debugfs', ['-R', `cat ${path}`, partition]);
  if (res.code !== 0 || /File not found/.test(res.stderr)) return null;
  return res.stdout;
}

async function existsInExt4(partition: string, path: string): Promise<boolean> {
  const res = await sh('debugfs', ['-R', `stat ${path}`, partition]);
  return res.code === 0 && !/File not found/.test(res.stderr);
}

async function startBootloaderAgent(disk: LoopDevice, extra: string[] = []): Promise<{ agent: AgentProcess; client: AgentClient }> {
  const agent = await startAgent({ args: [...BASE_ARGS, '--devices', disk.path, '--debug', ...extra], port: await freePort() });
  return { agent, client: new AgentClient({ url: agent.url, pollIntervalMs: 200 }) };
}

async function partitionDisk(disk: LoopDevice, layout: 'msdos' | 'gpt'): Promise<string> {
  if (layout === 'msdos') {
    // As IPA lays out a BIOS partition image on msdos: root last, with the boot flag.
    await run('parted', ['-s', disk.path, 'mklabel', 'msdos', 'mkpart', 'primary', 'ext4', '1MiB', '100%', 'set', '1', 'boot', 'on']);
  } else {
    await run('sgdisk', ['-Z', disk.path]).catch(() => undefined);
    await run('sgdisk', ['-n', '1:2048:+1M', '-t', '1:ef02', '-c', '1:bios-boot', '-n', '2:0:0', '-t', '2:8300', '-c', '2:root', disk.path]);
  }
  await run('partprobe', [disk.path]);
  const n = layout === 'msdos' ? 1 : 2;
  await waitFor(() => existsSync(`${disk.path}p${n}`), `${disk.path}p${n}`);
  return `${disk.path}p${n}`;
}

beforeAll(async () => {
  // Builds the image on the first run (a few minutes), then comes from the cache.
  tarball = await rootfsTarball();
  console.log(
    `bootable rootfs: ${tarball.path} (${(tarball.bytes / MiB).toFixed(0)} MiB)${tarball.builtSeconds ? `, built in ${tarball.builtSeconds.toFixed(0)} s` : ', from the cache'}`,
  );
}, 1_800_000);

afterAll(() => {
  console.log(`bootloader tests: ${((Date.now() - started) / 1000).toFixed(0)} s`);
});

describe('BIOS, msdos partition table: install, boot, rerun, errors', () => {
  let disk: LoopDevice | undefined;
  let agent: AgentProcess | undefined;
  let client: AgentClient | undefined;
  let root = '';
  let rootUuid = '';
  const marker = `FERRUM-BOOTED-${randomBytes(6).toString('hex')}`;
  let bootImg: Buffer;
  let diskboot: Buffer;

  beforeAll(async () => {
    disk = await createLoopDevice(DISK_MIB);
    root = await partitionDisk(disk, 'msdos');
    rootUuid = await populateRoot(root, tarball.path, { marker });
    // The image's own GRUB files, to compare what lands on the disk with.
    bootImg = Buffer.from((await catFromExt4Binary(root, GRUB_BOOT_IMG))!);
    diskboot = Buffer.from((await catFromExt4Binary(root, '/usr/lib/grub/i386-pc/diskboot.img'))!);
    ({ agent, client } = await startBootloaderAgent(disk));
  });

  afterAll(async () => {
    await client?.close();
    await agent?.stop();
    await destroyLoop(disk);
  });

  it('installs the image GRUB into the MBR and the gap after it, with a grub.cfg for the root UUID, and unmounts everything', async () => {
    const before = bootloaderTempDirs();
    // parted's generic MBR code only chains to the active partition: not a boot loader.
    expect(readAt(disk!.path, 0, 4).toString('hex')).toBe('fab80010');
    expect(readAt(disk!.path, 512, 512).every((b) => b === 0)).toBe(true);

    const t0 = Date.now();
    const result = await client!.installBootloader({ root_uuid: rootUuid, efi_system_part_uuid: null, prep_boot_part_uuid: null, target_boot_mode: 'bios' });
    console.log(`install_bootloader (msdos): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    expect(result).toBeNull();

    expectGrubBootSector(readAt(disk!.path, 0, 512), bootImg);
    // The partition table survived.
    expect(readAt(disk!.path, 446 + 4, 1)[0]).toBe(0x83);
    // core.img in the MBR gap (sectors 1…2047), starting with diskboot.img.
    expectCoreImage(readAt(disk!.path, 512, 512), diskboot);
    const gap = readAt(disk!.path, 512, 2047 * 512);
    expect(gap.filter((b) => b !== 0).length).toBeGreaterThan(10_000);

    await expectNothingLeftMounted(disk!, before);
    expect((await sh('e2fsck', ['-fn', root])).code).toBe(0);

    const cfg = await catFromExt4(root, '/boot/grub/grub.cfg');
    expect(cfg).not.toBeNull();
    expect(cfg).toContain(`search --no-floppy --fs-uuid --set=root ${rootUuid}`);
    expect(cfg).toMatch(new RegExp(`linux\\s+/boot/vmlinuz-\\S+ root=UUID=${rootUuid} ro console=ttyS0`));
    expect(await existsInExt4(root, '/boot/grub/i386-pc/normal.mod')).toBe(true);
    // The image is left as it was: no /etc/mtab of ours, fstab untouched (no ESP in BIOS mode).
    expect(await existsInExt4(root, '/etc/mtab')).toBe(false);
    expect(await catFromExt4(root, '/etc/fstab')).toBe(`UUID=${rootUuid}\t/\text4\terrors=remount-ro\t0\t1\n`);
    // GRUB only ever ran through the image's chroot.
    const cmds = await commandsRun(agent!);
    expect(cmds.filter((c) => /grub/.test(c.cmd))).toEqual([]);
    const chrooted = cmds.filter((c) => c.cmd === 'chroot').map((c) => c.args.slice(1).join(' '));
    expect(chrooted).toContain(`/usr/sbin/grub-install --target=i386-pc ${disk!.path}`);
    expect(chrooted).toContain('/usr/sbin/grub-mkconfig -o /boot/grub/grub.cfg');
  });

  it('boots under QEMU (SeaBIOS, TCG) into the image init from the root file system', async () => {
    await run('sync', []);
    await run('blockdev', ['--flushbufs', disk!.path]);
    const boot = await bootInQemu(disk!.file, marker, 280_000);
    console.log(`QEMU boot (msdos): ${boot.seconds.toFixed(0)} s, booted=${boot.booted}`);
    expect(boot.booted, boot.output.slice(-3000)).toBe(true);
    expect(boot.output).toContain(`${marker} root=UUID=${rootUuid}`);
  }, 300_000);

  it('a rerun (also as Ironic resends it, without target_boot_mode) leaves the already bootable disk alone', async () => {
    const head = sha(readAt(disk!.path, 0, 2048 * 512));
    await client!.installBootloader({ root_uuid: rootUuid, efi_system_part_uuid: null, prep_boot_part_uuid: null });
    expect(sha(readAt(disk!.path, 0, 2048 * 512))).toBe(head);
    const lines = await agent!.logLines();
    expect(lines.some((l) => String(l['msg']).includes(`Skipping installation of bootloader on device ${disk!.path} as it is already marked bootable.`))).toBe(true);
    expect(mountsOf('ferrum-bootloader-')).toEqual([]);
  });

  it('does nothing for a whole-disk image (root_uuid null or 0x00000000)', async () => {
    const head = sha(readAt(disk!.path, 0, 2048 * 512));
    for (const root_uuid of [null, '0x00000000']) {
      expect(await client!.installBootloader({ root_uuid, efi_system_part_uuid: null, prep_boot_part_uuid: null, target_boot_mode: 'bios' })).toBeNull();
    }
    expect(sha(readAt(disk!.path, 0, 2048 * 512))).toBe(head);
    const lines = await agent!.logLines();
    expect(lines.filter((l) => String(l['msg']).includes('root UUID is not provided')).length).toBe(2);
  });

  it('fails with DeviceNotFound for a root UUID that is on no partition of the disk', async () => {
    const missing = '0d7c5d2e-91f4-4b7e-9a53-6a1c3c1d2e3f';
    const err = await client!
      .installBootloader({ root_uuid: missing, efi_system_part_uuid: null, prep_boot_part_uuid: null, target_boot_mode: 'bios' })
      .then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(AgentCommandError);
    const ce = (err as AgentCommandError).result.command_error!;
    expect(ce).toMatchObject({ type: 'DeviceNotFound', code: 404 });
    expect(ce.details).toBe(`No partition with UUID ${missing} found on device ${disk!.path}`);
    expect((err as AgentCommandError).result.command_name).toBe('install_bootloader');
    expect(mountsOf('ferrum-bootloader-')).toEqual([]);
  });
});

/** Binary file contents from an ext4 partition (debugfs dump to a temporary file). */
async function catFromExt4Binary(partition: string, path: string): Promise<Buffer | null> {
  const dir = await mkdtemp(join(tmpdir(), 'ferrum-dump-'));
  const out = join(dir, 'f');
  try {
    const res = await sh('debugfs', ['-R', `dump ${path} ${out}`, partition]);
    if (res.code !== 0 || !existsSync(out)) return null;
    return readFileSync(out);
  } finally {
    await sh('rm', ['-f', out]);
    await rmdir(dir);
  }
}

describe('BIOS, GPT with a BIOS boot partition', () => {
  let disk: LoopDevice | undefined;
  let agent: AgentProcess | undefined;
  let client: AgentClient | undefined;
  let root = '';
  let rootUuid = '';
  const marker = `FERRUM-BOOTED-${randomBytes(6).toString('hex')}`;

  beforeAll(async () => {
    disk = await createLoopDevice(DISK_MIB);
    root = await partitionDisk(disk, 'gpt');
    rootUuid = await populateRoot(root, tarball.path, { marker });
    ({ agent, client } = await startBootloaderAgent(disk));
  });

  afterAll(async () => {
    await client?.close();
    await agent?.stop();
    await destroyLoop(disk);
  });

  it('puts boot.img in the protective MBR and the core image in the BIOS boot partition; the disk boots', async () => {
    const before = bootloaderTempDirs();
    const biosBoot = `${disk!.path}p1`;
    expect(readAt(biosBoot, 0, MiB).every((b) => b === 0)).toBe(true);
    // Found by PARTUUID too (IPA accepts either).
    const partuuid = (await run('blkid', ['-p', '-s', 'PART_ENTRY_UUID', '-o', 'value', root])).trim();
    expect(partuuid).toMatch(/^[0-9a-f-]{36}$/);
    const t0 = Date.now();
    await client!.installBootloader({ root_uuid: partuuid, efi_system_part_uuid: null, prep_boot_part_uuid: null, target_boot_mode: 'bios' });
    console.log(`install_bootloader (gpt): ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    const bootImg = (await catFromExt4Binary(root, GRUB_BOOT_IMG))!;
    const diskboot = (await catFromExt4Binary(root, '/usr/lib/grub/i386-pc/diskboot.img'))!;
    const mbr = readAt(disk!.path, 0, 512);
    expectGrubBootSector(mbr, bootImg);
    expect(mbr[446 + 4]).toBe(0xee); // still a protective MBR
    expect(readAt(disk!.path, 512, 8).toString('latin1')).toBe('EFI PART');
    const core = readAt(biosBoot, 0, MiB);
    expectCoreImage(core.subarray(0, 512), diskboot);
    expect(core.filter((b) => b !== 0).length).toBeGreaterThan(10_000);
    await expectNothingLeftMounted(disk!, before);
    const cfg = await catFromExt4(root, '/boot/grub/grub.cfg');
    expect(cfg).toContain(`root=UUID=${rootUuid}`);

    await run('sync', []);
    await run('blockdev', ['--flushbufs', disk!.path]);
    const boot = await bootInQemu(disk!.file, marker, 280_000);
    console.log(`QEMU boot (gpt): ${boot.seconds.toFixed(0)} s, booted=${boot.booted}`);
    expect(boot.booted, boot.output.slice(-3000)).toBe(true);
  }, 400_000);
});

describe('an image without GRUB', () => {
  let disk: LoopDevice | undefined;
  let agent: AgentProcess | undefined;
  let client: AgentClient | undefined;
  let root = '';
  let rootUuid = '';

  beforeAll(async () => {
    disk = await createLoopDevice(DISK_MIB);
    root = await partitionDisk(disk, 'msdos');
    rootUuid = await populateRoot(root, tarball.path, { marker: 'FERRUM-NO-GRUB', withoutGrub: true });
    expect(await existsInExt4(root, '/usr/sbin/grub-install')).toBe(false);
    ({ agent, client } = await startBootloaderAgent(disk));
  });

  afterAll(async () => {
    await client?.close();
    await agent?.stop();
    await destroyLoop(disk);
  });

  it('fails clearly with CommandExecutionError, touches no boot sector and unmounts everything', async () => {
    const before = bootloaderTempDirs();
    const head = sha(readAt(disk!.path, 0, 2048 * 512));
    const err = await client!
      .installBootloader({ root_uuid: rootUuid, efi_system_part_uuid: null, prep_boot_part_uuid: null, target_boot_mode: 'bios' })
      .then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(AgentCommandError);
    const ce = (err as AgentCommandError).result.command_error!;
    expect(ce).toMatchObject({ type: 'CommandExecutionError', code: 500, message: 'Command execution failed' });
    expect(ce.details).toContain(`Installing GRUB2 boot loader to device ${disk!.path} failed with`);
    expect(ce.details).toContain('has no grub-install or grub2-install');
    expect(sha(readAt(disk!.path, 0, 2048 * 512))).toBe(head);
    await expectNothingLeftMounted(disk!, before);
    expect(await existsInExt4(root, '/etc/mtab')).toBe(false);
  });

  it('ignore_bootloader_failure=true turns the failure into a logged success', async () => {
    const before = bootloaderTempDirs();
    const result = await client!.installBootloader({
      root_uuid: rootUuid,
      efi_system_part_uuid: null,
      prep_boot_part_uuid: null,
      target_boot_mode: 'bios',
      ignore_bootloader_failure: true,
    });
    expect(result).toBeNull();
    const lines = await agent!.logLines();
    expect(lines.some((l) => /^ignoring the boot loader failure \(ignore_bootloader_failure\): CommandExecutionError: .*has no grub-install/.test(String(l['msg'])))).toBe(
      true,
    );
    await expectNothingLeftMounted(disk!, before);
  });

  it('the agent configuration (ipa-ignore-bootloader-failure) does the same, and the parameter still wins', async () => {
    await client!.close();
    await agent!.stop();
    ({ agent, client } = await startBootloaderAgent(disk!, ['--ignore-bootloader-failure']));
    expect(await client.installBootloader({ root_uuid: rootUuid, efi_system_part_uuid: null, prep_boot_part_uuid: null, target_boot_mode: 'bios' })).toBeNull();
    const err = await client
      .installBootloader({ root_uuid: rootUuid, efi_system_part_uuid: null, prep_boot_part_uuid: null, target_boot_mode: 'bios', ignore_bootloader_failure: false })
      .then(() => null, (e: unknown) => e);
    expect((err as AgentCommandError).result.command_error?.type).toBe('CommandExecutionError');
    expect(mountsOf('ferrum-bootloader-')).toEqual([]);
  });
});

describe('grub-install failing inside the chroot', () => {
  let disk: LoopDevice | undefined;
  let agent: AgentProcess | undefined;
  let client: AgentClient | undefined;
  let rootUuid = '';

  beforeAll(async () => {
    // GPT without a BIOS boot partition: GRUB has nowhere to embed its core image.
    disk = await createLoopDevice(DISK_MIB);
    await run('sgdisk', ['-n', '1:2048:0', '-t', '1:8300', disk.path]);
    await run('partprobe', [disk.path]);
    await waitFor(() => existsSync(`${disk!.path}p1`), `${disk.path}p1`);
    rootUuid = await populateRoot(`${disk.path}p1`, tarball.path, { marker: 'FERRUM-NO-EMBED' });
    ({ agent, client } = await startBootloaderAgent(disk));
  });

  afterAll(async () => {
    await client?.close();
    await agent?.stop();
    await destroyLoop(disk);
  });

  it("fails with CommandExecutionError carrying grub-install's stderr, and unmounts everything", async () => {
    const before = bootloaderTempDirs();
    const err = await client!
      .installBootloader({ root_uuid: rootUuid, efi_system_part_uuid: null, prep_boot_part_uuid: null, target_boot_mode: 'bios' })
      .then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(AgentCommandError);
    const ce = (err as AgentCommandError).result.command_error!;
    expect(ce.type).toBe('CommandExecutionError');
    expect(ce.details).toContain(`Installing GRUB2 boot loader to device ${disk!.path} failed with chroot `);
    expect(ce.details).toContain(`/usr/sbin/grub-install --target=i386-pc ${disk!.path} exited with code 1`);
    expect(ce.details).toMatch(/GPT partition label contains no BIOS Boot Partition/);
    await expectNothingLeftMounted(disk!, before);
    expect((await sh('e2fsck', ['-fn', `${disk!.path}p1`])).code).toBe(0);
    expect(await existsInExt4(`${disk!.path}p1`, '/etc/mtab')).toBe(false);
  });
});
