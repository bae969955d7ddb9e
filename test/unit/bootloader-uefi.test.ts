// install_bootloader's UEFI path as far as it runs without EFI firmware: a simulated UEFI ramdisk
// (/sys/firmware/efi, efibootmgr against an in-memory NVRAM) over a real FAT ESP image read with
// mtools. The image's loader gets one NVRAM entry, reruns keep one, an empty ESP falls through
// to the root_uuid rule, no ESP is DeviceNotFound (or a logged success when failures are ignored).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installBootloader, type BootloaderDeps } from '../../src/agent/bootloader/install.js';
import { AgentError } from '../../src/agent/errors.js';
import type { RunResult } from '../../src/agent/host/host.js';
import { FakeHost, fail, ok } from './support/fake-host.js';
import { captureLog } from './support/log-capture.js';
import { SimulatedNvram } from './support/simulated-nvram.js';

const ESP_GUID = '5b0f0e7a-2f7e-4a8e-9d7e-1c2b3a4d5e6f';
const PARTED_GPT_ESP = `BYT;\n/dev/sda:4295MB:scsi:512:512:gpt:QEMU HARDDISK:;\n1:1049kB:538MB:537MB:fat32:EFI System Partition:boot, esp;\n2:538MB:4294MB:3756MB:ext4::;\n`;
const PARTED_NO_ESP = `BYT;\n/dev/sda:4295MB:scsi:512:512:gpt:QEMU HARDDISK:;\n1:1049kB:4294MB:4293MB:ext4::;\n`;

/** shim's BOOTX64.CSV (UCS-2 LE with BOM). */
const CSV = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('shimx64.efi,debian,,This is the boot entry for debian\n', 'utf16le')]);

/** A UEFI machine with /dev/sda (GPT: ESP sda1, root sda2) whose ESP is a FAT image file. */
class UefiHost extends FakeHost {
  readonly nvram = new SimulatedNvram({ '/dev/sda:1': ESP_GUID });

  constructor(espImage: string, parted: string) {
    super({
      dirs: ['/sys/firmware/efi', '/sys/firmware/efi/efivars'],
      files: {
        '/sys/block/sda/sda1/partition': '1',
        '/sys/block/sda/sda2/partition': '2',
        '/sys/class/block/sda1/partition': '1',
        '/sys/class/block/sda2/partition': '2',
      },
      run: (cmd, args) => this.answer(espImage, parted, cmd, args),
    });
  }

  private answer(espImage: string, parted: string, cmd: string, args: readonly string[]): RunResult {
    switch (cmd) {
      case 'partx':
        return ok('');
      case 'parted':
        return ok(parted);
      case 'lsblk':
        if (args[1] === '/dev/sda1') return ok(`KNAME="sda1" UUID="7A1B-2C3D" PARTUUID="${ESP_GUID}" TYPE="part" LABEL="" FSTYPE="vfat" PARTTYPE="c12a7328-f81f-11d2-ba4b-00a0c93ec93b"\n`);
        return fail('lsblk: unexpected');
      case 'efibootmgr':
        return this.nvram.efibootmgr(args);
      case 'mdir':
      case 'mcopy': {
        // The real mtools, on the image file standing in for /dev/sda1.
        const real = args.map((a) => (a === '/dev/sda1' ? espImage : a));
        try {
          const stdout = execFileSync(cmd, real, { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' }, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
          return ok(stdout);
        } catch (err) {
          const e = err as { status?: number; stdout?: Buffer; stderr?: Buffer };
          return { exitCode: e.status ?? 1, stdout: e.stdout?.toString() ?? '', stderr: e.stderr?.toString() ?? '' };
        }
      }
      case 'sync':
        return ok('');
      default:
        return fail(`UefiHost: unexpected ${cmd} ${args.join(' ')}`, 127);
    }
  }

  // (FakeHost declares hasCommand without parameters.)
  override async hasCommand(...args: string[]): Promise<boolean> {
    return ['efibootmgr', 'mdir', 'mcopy'].includes(args[0] ?? '');
  }

  override async assertMayDestroy(): Promise<void> {}

  override async realpath(path: string): Promise<string> {
    const m = /^\/sys\/class\/block\/(sda\d)$/.exec(path);
    return m ? `/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda/${m[1]}` : path;
  }
}

function deps(host: FakeHost, log = captureLog()): BootloaderDeps & { captured: ReturnType<typeof captureLog> } {
  return {
    host,
    config: { ignoreBootloaderFailure: false, diskWaitAttempts: 1, diskWaitDelay: 0 },
    node: null,
    log: log.log,
    installDevice: '/dev/sda',
    captured: log,
  };
}

describe('install_bootloader on a (simulated) UEFI ramdisk', () => {
  let dir = '';
  let esp = '';
  let emptyEsp = '';

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferrum-uefi-unit-'));
    const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
    const fat = (name: string) => {
      const img = join(dir, name);
      execFileSync('truncate', ['-s', '34M', img]);
      execFileSync('mkfs.vfat', ['-F', '32', img], { stdio: 'ignore' });
      return img;
    };
    esp = fat('esp.img');
    emptyEsp = fat('empty.img');
    execFileSync('mmd', ['-i', esp, '::/EFI', '::/EFI/BOOT', '::/EFI/debian'], { env });
    for (const [name, data, dest] of [
      ['a', 'MZ', '::/EFI/BOOT/BOOTX64.EFI'],
      ['b', 'MZ', '::/EFI/debian/shimx64.efi'],
      ['c', 'MZ', '::/EFI/debian/grubx64.efi'],
      ['d', CSV, '::/EFI/debian/BOOTX64.CSV'],
    ] as const) {
      writeFileSync(join(dir, name), data);
      execFileSync('mcopy', ['-i', esp, join(dir, name), dest], { env });
    }
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("points one NVRAM entry at the image's own loader (from BOOTX64.CSV), without mounting or GRUB", async () => {
    const host = new UefiHost(esp, PARTED_GPT_ESP);
    const d = deps(host);
    // Whole-disk image: Ironic sends the MBR-style "root uuid" and no ESP UUID.
    expect(await installBootloader(d, { root_uuid: '0x1a2b3c4d', efi_system_part_uuid: null, prep_boot_part_uuid: null, target_boot_mode: 'uefi' })).toBeNull();
    expect(host.nvram.entries).toEqual([{ num: '0000', label: 'debian', disk: '/dev/sda', part: 1, loader: '\\EFI\\debian\\shimx64.efi' }]);
    const cmds = host.commands.map((c) => c.cmd);
    expect(cmds).not.toContain('mount');
    expect(cmds).not.toContain('chroot');
    expect(host.commands.find((c) => c.cmd === 'efibootmgr' && c.args.includes('-c'))?.args).toEqual([
      '-v', '-c', '-d', '/dev/sda', '-p', '1', '-w', '-L', 'debian', '-l', '\\EFI\\debian\\shimx64.efi',
    ]);
  });

  it('reruns (Ironic retries) keep a single entry', async () => {
    const host = new UefiHost(esp, PARTED_GPT_ESP);
    for (let i = 0; i < 3; i++) await installBootloader(deps(host), { root_uuid: null, efi_system_part_uuid: null, target_boot_mode: 'uefi' });
    expect(host.nvram.entries.map((e) => e.label)).toEqual(['debian']);
    expect(host.commands.filter((c) => c.cmd === 'efibootmgr' && c.args.includes('-B'))).toHaveLength(2);
  });

  it('an empty ESP falls through to the root_uuid rule (a whole-disk image: done, with a warning)', async () => {
    const host = new UefiHost(emptyEsp, PARTED_GPT_ESP);
    const d = deps(host);
    expect(await installBootloader(d, { root_uuid: null, target_boot_mode: 'uefi' })).toBeNull();
    expect(host.nvram.entries).toEqual([]);
    expect(d.captured.messages()).toContain('Empty EFI partition detected.');
    expect(d.captured.messages()).toContain('Not using grub2-install since root UUID is not provided. Assuming a whole disk image');
  });

  it('no ESP at all: DeviceNotFound, or a logged success with ignore_bootloader_failure', async () => {
    const host = new UefiHost(esp, PARTED_NO_ESP);
    const err = await installBootloader(deps(host), { root_uuid: null, target_boot_mode: 'uefi' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).type).toBe('DeviceNotFound');
    expect((err as AgentError).details).toMatch(/^No EFI partition could be detected on device \/dev\/sda and EFI partition UUID has not been recorded/);
    const d = deps(host);
    expect(await installBootloader(d, { root_uuid: null, target_boot_mode: 'uefi', ignore_bootloader_failure: true })).toBeNull();
    expect(d.captured.messages().some((m) => m.startsWith('ignoring the boot loader failure (ignore_bootloader_failure): DeviceNotFound: No EFI partition'))).toBe(true);
    // The configuration does the same when the parameter is not given.
    const d2 = deps(host);
    d2.config = { ...d2.config, ignoreBootloaderFailure: true };
    expect(await installBootloader(d2, { root_uuid: null, target_boot_mode: 'uefi' })).toBeNull();
  });

  it('finds the ESP by its UUID when the partition table does not flag it', async () => {
    const host = new UefiHost(esp, PARTED_NO_ESP.replace('1:1049kB:4294MB:4293MB:ext4::;', '1:1049kB:538MB:537MB:fat32::;'));
    // lsblk on the disk lists the ESP by its PARTUUID.
    const origRun = host.run.bind(host);
    host.run = async (cmd, args, opts) => {
      if (cmd === 'lsblk' && args[1] === '/dev/sda') {
        host.commands.push({ cmd, args });
        return ok(`KNAME="sda" UUID="" PARTUUID="" TYPE="disk" LABEL="" FSTYPE="" PARTTYPE=""\nKNAME="sda1" UUID="7A1B-2C3D" PARTUUID="${ESP_GUID}" TYPE="part" LABEL="" FSTYPE="vfat" PARTTYPE=""\n`);
      }
      return origRun(cmd, args, opts);
    };
    expect(await installBootloader(deps(host), { root_uuid: null, efi_system_part_uuid: ESP_GUID, target_boot_mode: 'uefi' })).toBeNull();
    expect(host.nvram.entries.map((e) => [e.label, e.part])).toEqual([['debian', 1]]);
  });

  it("an efibootmgr failure is a CommandExecutionError with efibootmgr's stderr", async () => {
    const host = new UefiHost(esp, PARTED_GPT_ESP);
    const origRun = host.run.bind(host);
    host.run = async (cmd, args, opts) => {
      if (cmd === 'efibootmgr' && args.includes('-c')) {
        const { HostCommandError } = await import('../../src/agent/host/host.js');
        throw new HostCommandError(['efibootmgr', ...args].join(' '), 5, '', 'Could not prepare Boot variable: No space left on device\n', 'exited with code 5');
      }
      return origRun(cmd, args, opts);
    };
    const err = await installBootloader(deps(host), { root_uuid: null, target_boot_mode: 'uefi' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).type).toBe('CommandExecutionError');
    expect((err as AgentError).details).toMatch(/^Could not configure UEFI boot on device \/dev\/sda: efibootmgr -v -c -d \/dev\/sda -p 1 .* exited with code 5: Could not prepare Boot variable: No space left on device$/);
  });

  it('a BIOS ramdisk asked for UEFI warns about the mismatch and leaves NVRAM alone', async () => {
    const host = new FakeHost({ run: () => fail('unexpected', 127) });
    Object.defineProperty(host, 'assertMayDestroy', { value: async () => undefined });
    const d = deps(host);
    expect(await installBootloader(d, { root_uuid: null, target_boot_mode: 'uefi' })).toBeNull();
    expect(d.captured.messages()).toContain(
      'Boot mode mismatch: target boot mode is uefi, current boot mode is bios. Installing boot loader may fail or work incorrectly.',
    );
    expect(host.commands).toEqual([]);
  });
});
