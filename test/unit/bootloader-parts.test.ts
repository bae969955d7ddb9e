// The parts of install_bootloader below the command: partition lookup by UUID/PARTUUID/label,
// the partition table and boot sector checks, the edits of the image's files, GRUB's command
// lines, software RAID preparation, and the mount session's clean-up when unmounting fails.
import { existsSync, lstatSync, mkdtempSync, mkdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hasBootCode, isBootloaderLoaded, parseOdHex } from '../../src/agent/bootloader/boot-sector.js';
import { biosTarget, findImageGrub, grubBiosArgs, grubUefiArgs } from '../../src/agent/bootloader/grub.js';
import { addEspToFstab, ensureMtab, espFstabSpec, fstabWithEsp, grubDefaultsWithMdUuids } from '../../src/agent/bootloader/image-files.js';
import { MountSession, mountsBelow, parseMountInfo } from '../../src/agent/bootloader/mounts.js';
import {
  findEfiPartitionNumber,
  findPartition,
  matchPartition,
  mdHolderDisks,
  parseBlkidExport,
  parseLsblkPairs,
  parsePartedMachine,
} from '../../src/agent/bootloader/partitions.js';
import { prepareBootPartitionsForSoftraid } from '../../src/agent/bootloader/softraid.js';
import { AgentError } from '../../src/agent/errors.js';
import type { RunResult } from '../../src/agent/host/host.js';
import { silentLogger } from '../../src/agent/log.js';
import { FakeHost, fail, ok, type FakeHostOptions } from './support/fake-host.js';
import { captureLog } from './support/log-capture.js';

/** A FakeHost that may "destroy" the listed devices and resolves the given links. */
class PermissiveHost extends FakeHost {
  constructor(
    o: FakeHostOptions,
    private readonly allowed: string[],
    private readonly real: Record<string, string> = {},
    private readonly commandsPresent: string[] = [],
  ) {
    super(o);
  }
  override async assertMayDestroy(device: string): Promise<void> {
    if (!this.allowed.includes(device)) throw new AgentError('UnsafeHostError', `${device} is not allowed`);
  }
  override async realpath(path: string): Promise<string> {
    return this.real[path] ?? path;
  }
  override async hasCommand(...args: string[]): Promise<boolean> {
    return this.commandsPresent.includes(args[0] ?? '');
  }
}

const LSBLK_MSDOS = [
  'KNAME="sda" UUID="" PARTUUID="" TYPE="disk" LABEL="" FSTYPE="" PARTTYPE=""',
  'KNAME="sda1" UUID="" PARTUUID="8d94338e-01" TYPE="part" LABEL="" FSTYPE="" PARTTYPE="0x82"',
  'KNAME="sda2" UUID="3e2757f4-1614-4772-b68d-ec9fb07a4788" PARTUUID="8d94338e-02" TYPE="part" LABEL="cloud\\x20root" FSTYPE="ext4" PARTTYPE="0x83"',
  '',
].join('\n');

describe('finding partitions', () => {
  it('parses lsblk -P pairs with escapes', () => {
    const rows = parseLsblkPairs(LSBLK_MSDOS);
    expect(rows).toHaveLength(3);
    expect(rows[2]).toMatchObject({ KNAME: 'sda2', LABEL: 'cloud root', PARTTYPE: '0x83' });
  });

  it('matches a file system UUID, a PARTUUID or a label, case-insensitively, never a whole disk', () => {
    const rows = parseLsblkPairs(LSBLK_MSDOS);
    expect(matchPartition(rows, '3E2757F4-1614-4772-B68D-EC9FB07A4788')).toBe('/dev/sda2');
    expect(matchPartition(rows, '8d94338e-01')).toBe('/dev/sda1');
    expect(matchPartition(rows, 'cloud root')).toBe('/dev/sda2');
    expect(matchPartition(rows, '0x8d94338e')).toBeNull();
    expect(matchPartition(parseLsblkPairs('KNAME="md0" UUID="u-1" TYPE="raid1"\nKNAME="md0p1" UUID="u-2" TYPE="md"\n'), 'u-2')).toBe('/dev/md0p1');
  });

  it('asks blkid when lsblk has no UUIDs (no udev), and takes blkid hits only on devices the agent may touch', async () => {
    const run = (cmd: string, args: readonly string[]): RunResult => {
      if (cmd === 'partx') return ok('');
      if (cmd === 'lsblk') return ok('KNAME="sdb" UUID="" PARTUUID="" TYPE="disk"\nKNAME="sdb1" UUID="" PARTUUID="" TYPE="part"\n');
      if (cmd === 'blkid' && args[0] === '-p') return ok(args[3] === '/dev/sdb1' ? 'DEVNAME=/dev/sdb1\nUUID=aaaa\nTYPE=ext4\nPART_ENTRY_UUID=1234-01\n' : '');
      if (cmd === 'blkid' && args.join(' ') === '-o device -t UUID=elsewhere') return ok('/dev/sdz1\n/dev/sdb9\n');
      return fail('', 2);
    };
    const host = new PermissiveHost({ run }, ['/dev/sdb', '/dev/sdb1', '/dev/sdb9']);
    const log = silentLogger();
    expect(await findPartition(host, '/dev/sdb', 'aaaa', log)).toBe('/dev/sdb1');
    expect(await findPartition(host, '/dev/sdb', '1234-01', log)).toBe('/dev/sdb1');
    // /dev/sdz1 (another disk, not ours) is passed over.
    expect(await findPartition(host, '/dev/sdb', 'elsewhere', log)).toBe('/dev/sdb9');
    const err = await findPartition(host, '/dev/sdb', 'nowhere', log).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).toCommandError()).toEqual({
      type: 'DeviceNotFound',
      code: 404,
      message: 'Error finding the disk or partition device to deploy the image onto',
      details: 'No partition with UUID nowhere found on device /dev/sdb',
    });
    expect(parseBlkidExport('A=1\nB=x=y\n')).toEqual({ A: '1', B: 'x=y' });
  });

  it('reads holder disks of an md device from sysfs', async () => {
    const host = new PermissiveHost(
      { dirs: ['/sys/block/md0/slaves/sda2', '/sys/block/md0/slaves/sdb2', '/sys/class/block/md0/md'], files: { '/sys/class/block/sda2/partition': '2', '/sys/class/block/sdb2/partition': '2' } },
      [],
      { '/sys/class/block/sda2': '/sys/devices/pci0000:00/ata1/host0/block/sda/sda2', '/sys/class/block/sdb2': '/sys/devices/pci0000:00/ata2/host1/block/sdb/sdb2' },
    );
    expect(await mdHolderDisks(host, '/dev/md0')).toEqual(['/dev/sda', '/dev/sdb']);
  });
});

const PARTED_GPT = 'BYT;\n/dev/sda:4295MB:scsi:512:512:gpt:QEMU HARDDISK:;\n1:1049kB:2097kB:1049kB::bios:bios_grub;\n2:2097kB:556MB:554MB:fat32:esp:boot, esp;\n3:556MB:4294MB:3738MB:ext4:root:;\n';
const PARTED_MSDOS = 'BYT;\n/dev/loop0:4295MB:loopback:512:512:msdos:Loopback device:;\n1:1049kB:4295MB:4294MB:ext4::boot;\n';

describe('partition tables and boot sectors', () => {
  it('parses parted -m output and finds the ESP as ironic-lib does', () => {
    const gpt = parsePartedMachine(PARTED_GPT);
    expect(gpt.label).toBe('gpt');
    expect(gpt.partitions.map((p) => [p.number, p.flags])).toEqual([
      [1, ['bios_grub']],
      [2, ['boot', 'esp']],
      [3, []],
    ]);
    expect(findEfiPartitionNumber(gpt)).toBe(2);
    // On msdos, "boot" is the active flag, not an ESP.
    expect(findEfiPartitionNumber(parsePartedMachine(PARTED_MSDOS))).toBeNull();
    expect(findEfiPartitionNumber(parsePartedMachine('BYT;\n/dev/sdc:1GB:scsi:512:512:msdos:x:;\n1:1MB:100MB:99MB:fat16::esp;\n'))).toBe(1);
    expect(findEfiPartitionNumber(null)).toBeNull();
  });

  it('tells a boot loader from an empty or generic MBR', () => {
    const sector = (head: number[]) => {
      const b = Buffer.alloc(512);
      Buffer.from(head).copy(b);
      b[510] = 0x55;
      b[511] = 0xaa;
      return b;
    };
    expect(hasBootCode(sector([0xeb, 0x63, 0x90, 0x10]))).toBe(true); // GRUB boot.img
    expect(hasBootCode(sector([0x33, 0xc0, 0x8e, 0xd0]))).toBe(true); // Windows
    expect(hasBootCode(sector([0xfa, 0xb8, 0x00, 0x10]))).toBe(false); // parted's generic code
    expect(hasBootCode(sector([]))).toBe(false); // sfdisk/sgdisk: no code
    const noSig = sector([0xeb, 0x63]);
    noSig[511] = 0;
    expect(hasBootCode(noSig)).toBe(false);
    if (existsSync('/usr/lib/grub/i386-pc/boot.img')) {
      const img = readFileSync('/usr/lib/grub/i386-pc/boot.img');
      expect(hasBootCode(img)).toBe(true);
    }
    expect(parseOdHex(' eb 63 90\n 55 aa\n')).toEqual(Buffer.from([0xeb, 0x63, 0x90, 0x55, 0xaa]));
  });

  it('IPA rule: a boot-flagged partition plus boot code in BIOS mode means "already bootable"; never in UEFI mode', async () => {
    const grubHead = ' eb 63 90' + ' 00'.repeat(507) + ' 55 aa\n';
    const host = (parted: string, head: string) =>
      new FakeHost({ run: (cmd) => (cmd === 'parted' ? ok(parted) : cmd === 'od' ? ok(head) : fail('?')) });
    const log = silentLogger();
    expect(await isBootloaderLoaded(host(PARTED_MSDOS, grubHead), '/dev/loop0', 'bios', log)).toBe(true);
    expect(await isBootloaderLoaded(host(PARTED_MSDOS, grubHead), '/dev/loop0', 'uefi', log)).toBe(false);
    expect(await isBootloaderLoaded(host(PARTED_MSDOS.replace('::boot;', '::;'), grubHead), '/dev/loop0', 'bios', log)).toBe(false);
    expect(await isBootloaderLoaded(host(PARTED_MSDOS, grubHead.replace('eb 63 90', 'fa b8 00')), '/dev/loop0', 'bios', log)).toBe(false);
  });
});

describe("the image's files", () => {
  let dir = '';
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = '';
  });

  it('adds the ESP to fstab once, replaces a stale UUID line, keeps a label line', () => {
    const base = 'UUID=1111 / ext4 defaults 0 1\n';
    const r1 = fstabWithEsp(base, 'UUID=ABCD-1234');
    expect(r1).toMatchObject({ changed: true, note: 'added' });
    expect(r1.text).toBe(`${base}UUID=ABCD-1234\t/boot/efi\tvfat\tumask=0077\t0\t1\n`);
    expect(fstabWithEsp(r1.text, 'UUID=abcd-1234').changed).toBe(false);
    const stale = fstabWithEsp(`${base}UUID=9999-0000  /boot/efi vfat umask=0077 0 1`, 'UUID=ABCD-1234');
    expect(stale.text.split('\n')).toEqual([
      'UUID=1111 / ext4 defaults 0 1',
      '# UUID=9999-0000  /boot/efi vfat umask=0077 0 1  # replaced by the agent: not this machine\'s ESP',
      'UUID=ABCD-1234\t/boot/efi\tvfat\tumask=0077\t0\t1',
      '',
    ]);
    expect(fstabWithEsp(`${base}LABEL=EFI /boot/efi vfat defaults 0 2\n`, 'UUID=ABCD-1234').changed).toBe(false);
    expect(espFstabSpec('ABCD-1234', 'x', null)).toBe('UUID=ABCD-1234');
    expect(espFstabSpec(null, '6f1d-aa', '6F1D-AA')).toBe('PARTUUID=6F1D-AA');
    expect(espFstabSpec(null, 'ABCD-1234', null)).toBe('UUID=ABCD-1234');
    expect(espFstabSpec(null, null, null)).toBeNull();
  });

  it('rewrites fstab atomically with its mode, and leaves an image without fstab alone', async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferrum-fstab-'));
    mkdirSync(join(dir, 'etc'));
    writeFileSync(join(dir, 'etc/fstab'), 'UUID=1 / ext4 defaults 0 1');
    chmodSync(join(dir, 'etc/fstab'), 0o600);
    await addEspToFstab(dir, 'UUID=AB-CD', silentLogger());
    expect(readFileSync(join(dir, 'etc/fstab'), 'utf8')).toBe('UUID=1 / ext4 defaults 0 1\nUUID=AB-CD\t/boot/efi\tvfat\tumask=0077\t0\t1\n');
    expect(statSync(join(dir, 'etc/fstab')).mode & 0o777).toBe(0o600);
    rmSync(join(dir, 'etc/fstab'));
    await addEspToFstab(dir, 'UUID=AB-CD', silentLogger());
    expect(existsSync(join(dir, 'etc/fstab'))).toBe(false);
  });

  it('creates /etc/mtab only for the time of the work, and never replaces an existing one', async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferrum-mtab-'));
    mkdirSync(join(dir, 'etc'));
    const undo = await ensureMtab(dir, silentLogger());
    expect(readlinkSync(join(dir, 'etc/mtab'))).toBe('../proc/self/mounts');
    await undo();
    expect(lstatSync(join(dir, 'etc/mtab'), { throwIfNoEntry: false })).toBeUndefined();
    writeFileSync(join(dir, 'etc/mtab'), 'old-style mtab\n');
    await (await ensureMtab(dir, silentLogger()))();
    expect(readFileSync(join(dir, 'etc/mtab'), 'utf8')).toBe('old-style mtab\n');
  });

  it('adds rd.md.uuid= for dracut once', () => {
    const text = 'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="crashkernel=auto rhgb"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n';
    const once = grubDefaultsWithMdUuids(text, ['a:b', 'c:d']);
    expect(once).toBe('GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="crashkernel=auto rhgb rd.md.uuid=a:b rd.md.uuid=c:d"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n');
    expect(grubDefaultsWithMdUuids(once, ['a:b', 'c:d'])).toBe(once);
  });

  it("finds the image's GRUB flavour (grub2-* first, as IPA)", async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferrum-grub-'));
    expect(await findImageGrub(dir)).toEqual({ flavour: 'grub', install: null, mkconfig: null });
    mkdirSync(join(dir, 'usr/sbin'), { recursive: true });
    writeFileSync(join(dir, 'usr/sbin/grub-install'), '');
    writeFileSync(join(dir, 'usr/sbin/grub-mkconfig'), '');
    expect(await findImageGrub(dir)).toEqual({ flavour: 'grub', install: '/usr/sbin/grub-install', mkconfig: '/usr/sbin/grub-mkconfig' });
    writeFileSync(join(dir, 'usr/sbin/grub2-install'), '');
    writeFileSync(join(dir, 'usr/sbin/grub2-mkconfig'), '');
    expect(await findImageGrub(dir)).toEqual({ flavour: 'grub2', install: '/usr/sbin/grub2-install', mkconfig: '/usr/sbin/grub2-mkconfig' });
  });
});

describe('GRUB command lines', () => {
  it('BIOS: i386-pc on x86, the default elsewhere (PReP)', () => {
    expect(grubBiosArgs('/dev/sda', 'x64')).toEqual(['--target=i386-pc', '/dev/sda']);
    expect(grubBiosArgs('/dev/sda1', 'ppc64')).toEqual(['/dev/sda1']);
    expect(biosTarget('arm64')).toBeNull();
  });

  it('UEFI: into /boot/efi, --removable for the fallback path, no NVRAM writes from a BIOS ramdisk', () => {
    expect(grubUefiArgs({ removable: false, ramdiskUefi: true, arch: 'x64' })).toEqual(['--target=x86_64-efi', '--efi-directory=/boot/efi']);
    expect(grubUefiArgs({ removable: false, ramdiskUefi: false, arch: 'x64' })).toEqual(['--target=x86_64-efi', '--efi-directory=/boot/efi', '--no-nvram']);
    expect(grubUefiArgs({ removable: true, ramdiskUefi: true, arch: 'arm64' })).toEqual(['--target=arm64-efi', '--efi-directory=/boot/efi', '--removable']);
  });
});

describe('software RAID', () => {
  it('BIOS: a BIOS boot partition on each GPT holder that has none, nothing on msdos holders', async () => {
    const parted: Record<string, string> = {
      '/dev/sda': 'BYT;\n/dev/sda:10GB:scsi:512:512:gpt:x:;\n1:1MB:9GB:9GB::raid:raid;\n',
      '/dev/sdb': 'BYT;\n/dev/sdb:10GB:scsi:512:512:gpt:x:;\n1:1MB:3MB:2MB::bios:bios_grub;\n2:3MB:9GB:9GB::raid:raid;\n',
      '/dev/sdc': 'BYT;\n/dev/sdc:10GB:scsi:512:512:msdos:x:;\n1:1MB:9GB:9GB:::raid;\n',
    };
    const host = new PermissiveHost(
      {
        run: (cmd, args) => {
          if (cmd === 'parted') return ok(parted[args[0]!]!);
          if (cmd === 'sgdisk' && args[0] === '-F') return ok('Creating new GPT entries in memory.\n18876416\n');
          if (cmd === 'sgdisk') return ok('');
          return fail(`unexpected ${cmd}`);
        },
      },
      ['/dev/sda', '/dev/sdb', '/dev/sdc'],
    );
    expect(await prepareBootPartitionsForSoftraid(host, silentLogger(), '/dev/md0', ['/dev/sda', '/dev/sdb', '/dev/sdc'], null, 'bios')).toBeNull();
    expect(host.commands.filter((c) => c.cmd === 'sgdisk').map((c) => c.args.join(' '))).toEqual([
      '-F /dev/sda',
      '-n 0:18876416s:+2MiB -t 0:ef02 -c 0:bios-boot-part-0 /dev/sda',
    ]);
  });
});

describe('the mount session', () => {
  /** A host whose mount table is a list, with umount failing as often as told. */
  function mountHost(failures: Record<string, number>, lazyWorks = true) {
    const table: string[] = [];
    const host = new FakeHost({
      run: (cmd, args) => {
        if (cmd === 'sync') return ok('');
        if (cmd === 'mount' && args[0] === '--make-private') return ok('');
        if (cmd === 'mount') {
          table.push(args[args.length - 1]!);
          return ok('');
        }
        if (cmd === 'umount') {
          const lazy = args[0] === '-l';
          const mp = args[args.length - 1]!;
          if (!lazy && (failures[mp] ?? 0) > 0) {
            failures[mp]!--;
            return fail(`umount: ${mp}: target is busy.`, 32);
          }
          if (lazy && !lazyWorks) return fail('nope', 32);
          table.splice(table.lastIndexOf(mp), 1);
          // What mount() created below the root mount point belonged to the mounted file system.
          if (mp.endsWith('/root')) for (const d of ['dev', 'proc', 'run', 'sys']) rmSync(join(mp, d), { recursive: true, force: true });
          return ok('');
        }
        return fail(`unexpected ${cmd}`);
      },
    });
    // /proc/self/mountinfo generated from the table.
    Object.defineProperty(host, 'readTextOrNull', {
      value: async (p: string) => (p === '/proc/self/mountinfo' ? table.map((mp, i) => `${100 + i} 1 7:1 / ${mp} rw - ext4 /dev/x rw`).join('\n') : null),
    });
    return { host, table };
  }

  it('unmounts newest first and removes its directory', async () => {
    const { host, table } = mountHost({});
    const s = await MountSession.create(host, silentLogger(), { retryDelayMs: 1 });
    await s.mountRootForChroot('/dev/sda2');
    expect(table).toEqual([s.root, `${s.root}/dev`, `${s.root}/proc`, `${s.root}/run`, `${s.root}/sys`]);
    await s.close();
    expect(table).toEqual([]);
    expect(s.problems).toEqual([]);
    expect(existsSync(s.dir)).toBe(false);
    const umounts = host.commands.filter((c) => c.cmd === 'umount').map((c) => c.args[0]);
    expect(umounts).toEqual([`${s.root}/sys`, `${s.root}/run`, `${s.root}/proc`, `${s.root}/dev`, s.root]);
  });

  it('retries a busy unmount, then detaches it lazily and reports it', async () => {
    const log = captureLog();
    const failures: Record<string, number> = {};
    const { host, table } = mountHost(failures);
    const s = await MountSession.create(host, log.log, { retryDelayMs: 1 });
    await s.mountRootForChroot('/dev/sda2');
    failures[`${s.root}/proc`] = 1; // busy once: the retry works
    failures[s.root] = 100; // stays busy: detached lazily
    await s.close();
    expect(table).toEqual([]);
    expect(s.problems).toEqual([`${s.root}: umount: ${s.root}: target is busy. (detached lazily)`]);
    expect(host.commands.filter((c) => c.cmd === 'umount' && c.args[0] === '-l').map((c) => c.args[1])).toEqual([s.root]);
    expect(host.commands.filter((c) => c.cmd === 'umount' && c.args[0] === s.root)).toHaveLength(3);
    expect(log.messages()).toContain(`could not unmount ${s.root}; detaching it lazily`);
    expect(existsSync(s.dir)).toBe(false);
  });

  it('never deletes a directory that still has something mounted below it', async () => {
    const log = captureLog();
    const failures: Record<string, number> = {};
    const { host, table } = mountHost(failures, false);
    const s = await MountSession.create(host, log.log, { retryDelayMs: 1 });
    await s.mount('/dev/sda2', s.root);
    failures[s.root] = 1_000;
    await s.close();
    expect(table).toEqual([s.root]);
    expect(existsSync(s.root)).toBe(true);
    expect(s.problems.join('\n')).toContain('still mounted');
    expect(log.messages().some((m) => m.includes('leaving the directory in place'))).toBe(true);
    // Tidy up the test's own directory (nothing is really mounted in this fake).
    rmSync(s.dir, { recursive: true, force: true });
  });

  it('parses mountinfo (octal escapes) and orders mounts below a directory', () => {
    const info = parseMountInfo('36 1 8:1 / / rw - ext4 /dev/sda1 rw\n90 36 7:1 / /tmp/f\\040x/root rw - ext4 /dev/loop0p1 rw\n91 90 0:5 / /tmp/f\\040x/root/dev rw - devtmpfs udev rw\n');
    expect(info[1]).toMatchObject({ mountPoint: '/tmp/f x/root', source: '/dev/loop0p1', fsType: 'ext4' });
    expect(mountsBelow(info, '/tmp/f x')).toEqual(['/tmp/f x/root/dev', '/tmp/f x/root']);
    expect(mountsBelow(info, '/tmp/f')).toEqual([]);
  });
});

