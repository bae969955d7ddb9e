// UEFI pieces of install_bootloader that can run without EFI firmware: which loader of an ESP an
// NVRAM entry points at (also on a real FAT image read with mtools, no mount), the efibootmgr
// command lines, reading `efibootmgr -v` output of several efibootmgr versions, and idempotent
// entries against a simulated NVRAM.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  chooseEfiLoaders,
  decodeCsv,
  duplicateRecords,
  efibootmgrCreateArgs,
  efibootmgrDeleteArgs,
  mtoolsEsp,
  parseBootCsv,
  parseEfibootmgr,
  parseMdirBare,
  recordLoader,
  writeNvramEntries,
} from '../../src/agent/bootloader/efi.js';
import { LocalHost } from '../../src/agent/host/host.js';
import { silentLogger } from '../../src/agent/log.js';
import { FakeHost, ok } from './support/fake-host.js';
import { SimulatedNvram } from './support/simulated-nvram.js';

/** shim's BOOTX64.CSV as Debian ships it: UCS-2 little endian with a byte-order mark. */
const debianCsv = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('shimx64.efi,debian,,This is the boot entry for debian\n', 'utf16le')]);
const noRead = async (): Promise<Buffer> => {
  throw new Error('no read expected');
};

describe('choosing the EFI loaders of an ESP', () => {
  it('follows a BOOTX64.CSV: the named loader in its directory, with its label, as the only entry', async () => {
    const files = ['EFI/BOOT/BOOTX64.EFI', 'EFI/BOOT/fbx64.efi', 'EFI/debian/BOOTX64.CSV', 'EFI/debian/grubx64.efi', 'EFI/debian/mmx64.efi', 'EFI/debian/shimx64.efi'];
    const read = async (rel: string) => {
      expect(rel).toBe('EFI/debian/BOOTX64.CSV');
      return debianCsv;
    };
    expect(await chooseEfiLoaders(files, read)).toEqual([{ loader: '\\EFI\\debian\\shimx64.efi', label: 'debian', source: 'EFI/debian/BOOTX64.CSV' }]);
  });

  it('without a CSV: one entry per known loader, labelled ironic1, ironic2… (IPA)', async () => {
    const files = ['EFI/Microsoft/Boot/winload.efi', 'EFI/BOOT/BOOTX64.EFI', 'EFI/debian/grubx64.efi'];
    expect(await chooseEfiLoaders(files, noRead)).toEqual([
      { loader: '\\EFI\\BOOT\\BOOTX64.EFI', label: 'ironic1', source: 'EFI/BOOT/BOOTX64.EFI' },
      { loader: '\\EFI\\Microsoft\\Boot\\winload.efi', label: 'ironic2', source: 'EFI/Microsoft/Boot/winload.efi' },
    ]);
  });

  it('beyond IPA: a vendor directory with only shim or GRUB still gets an entry (shim first)', async () => {
    expect(await chooseEfiLoaders(['EFI/centos/grubx64.efi', 'EFI/centos/shimx64.efi', 'EFI/centos/mmx64.efi'], noRead)).toEqual([
      { loader: '\\EFI\\centos\\shimx64.efi', label: 'ironic1', source: 'EFI/centos/shimx64.efi' },
    ]);
    expect(await chooseEfiLoaders(['EFI/debian/grubx64.efi', 'EFI/debian/grub.cfg'], noRead)).toEqual([
      { loader: '\\EFI\\debian\\grubx64.efi', label: 'ironic1', source: 'EFI/debian/grubx64.efi' },
    ]);
  });

  it('finds nothing on an empty ESP or one without loaders', async () => {
    expect(await chooseEfiLoaders([], noRead)).toEqual([]);
    expect(await chooseEfiLoaders(['EFI/debian/grub.cfg', 'startup.nsh'], noRead)).toEqual([]);
  });

  it('ignores an unreadable CSV and falls back to the loader files', async () => {
    const files = ['EFI/BOOT/BOOTX64.EFI', 'EFI/x/BOOT.CSV'];
    expect(await chooseEfiLoaders(files, async () => Buffer.from(''))).toEqual([{ loader: '\\EFI\\BOOT\\BOOTX64.EFI', label: 'ironic1', source: 'EFI/BOOT/BOOTX64.EFI' }]);
  });

  it('decodes CSV files in UTF-16 LE/BE with or without a byte-order mark, and UTF-8', () => {
    const text = 'shimx64.efi,redhat,,This is the boot entry for redhat\n';
    const be = Buffer.from(text, 'utf16le');
    be.swap16();
    expect(decodeCsv(debianCsv)).toContain('shimx64.efi,debian,,');
    expect(decodeCsv(Buffer.from(text, 'utf16le'))).toBe(text);
    expect(decodeCsv(Buffer.concat([Buffer.from([0xfe, 0xff]), be]))).toBe(text);
    expect(decodeCsv(Buffer.from(text))).toBe(text);
    expect(parseBootCsv(text)).toEqual({ file: 'shimx64.efi', label: 'redhat' });
    expect(parseBootCsv('\n')).toBeNull();
    expect(parseBootCsv('shimx64.efi')).toBeNull();
  });
});

describe('an ESP image read with mtools (no mount, no vfat driver)', () => {
  let dir = '';
  let img = '';
  const host = new LocalHost({ sysRoot: '/', devices: null, power: 'none', log: silentLogger() });

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferrum-esp-unit-'));
    img = join(dir, 'esp.img');
    const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
    execFileSync('truncate', ['-s', '34M', img]);
    execFileSync('mkfs.vfat', ['-F', '32', '-n', 'EFI-PART', img], { stdio: 'ignore' });
    execFileSync('mmd', ['-i', img, '::/EFI', '::/EFI/BOOT', '::/EFI/debian'], { env });
    const put = (name: string, data: Buffer | string, dest: string) => {
      const src = join(dir, name);
      writeFileSync(src, data);
      execFileSync('mcopy', ['-i', img, src, dest], { env });
    };
    put('bootx64', 'MZ fake loader', '::/EFI/BOOT/BOOTX64.EFI');
    put('shim', 'MZ fake shim', '::/EFI/debian/shimx64.efi');
    put('grub', 'MZ fake grub', '::/EFI/debian/grubx64.efi');
    put('csv', debianCsv, '::/EFI/debian/BOOTX64.CSV');
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('lists every file and reads the CSV byte for byte', async () => {
    const esp = mtoolsEsp(host, img, dir);
    expect((await esp.list()).sort()).toEqual(['EFI/BOOT/BOOTX64.EFI', 'EFI/debian/BOOTX64.CSV', 'EFI/debian/grubx64.efi', 'EFI/debian/shimx64.efi']);
    expect((await esp.read('EFI/debian/BOOTX64.CSV')).equals(debianCsv)).toBe(true);
  });

  it('chooses the loader the CSV names', async () => {
    const esp = mtoolsEsp(host, img, dir);
    expect(await chooseEfiLoaders(await esp.list(), (rel) => esp.read(rel))).toEqual([
      { loader: '\\EFI\\debian\\shimx64.efi', label: 'debian', source: 'EFI/debian/BOOTX64.CSV' },
    ]);
  });

  it('parses mdir bare listings (directories end in a slash)', () => {
    expect(parseMdirBare('::/EFI/\n::/EFI/BOOT/\n::/EFI/BOOT/BOOTX64.EFI\n::/EFI/x y/a b.efi\n')).toEqual(['EFI/BOOT/BOOTX64.EFI', 'EFI/x y/a b.efi']);
  });
});

// `efibootmgr -v` as efibootmgr 17 (Debian bookworm) prints it: label, a tab, the device path.
const EFIBOOTMGR_17 = [
  'BootCurrent: 0001',
  'Timeout: 0 seconds',
  'BootOrder: 0003,0001,0000,0002',
  'Boot0000* UiApp\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-7614-4503-836e-8ab6f4662331)',
  'Boot0001* UEFI QEMU QEMU HARDDISK \tPciRoot(0x0)/Pci(0x1,0x1)/Ata(0,0,0)N.....YM....R,Y.',
  'Boot0002* EFI Internal Shell\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(7c04a583-9e3e-4f1c-ad65-e05268d0b4d1)',
  'Boot0003* debian\tHD(1,GPT,8a1f7b3c-59e4-4c1e-9a6b-2f0c7d3e4b5a,0x800,0x100000)/File(\\EFI\\debian\\shimx64.efi)',
  'Boot0004  ironic1\tHD(1,GPT,8a1f7b3c-59e4-4c1e-9a6b-2f0c7d3e4b5a,0x800,0x100000)/File(\\EFI\\BOOT\\BOOTX64.EFI)',
  '',
].join('\n');

// efibootmgr 18 drops File(…) and prints the path bare; older ones separated label and path by spaces.
const EFIBOOTMGR_18 = 'BootOrder: 0005\nBoot0005* debian\tHD(1,GPT,8a1f7b3c-59e4-4c1e-9a6b-2f0c7d3e4b5a,0x800,0x100000)/\\EFI\\debian\\shimx64.efi\n';
const EFIBOOTMGR_OLD = 'Boot0007* ironic1 HD(2,MBR,0x1a2b3c4d,0x800,0x64000)/File(\\EFI\\BOOT\\BOOTX64.EFI)\n';

describe('efibootmgr', () => {
  it('reads boot records of efibootmgr 17', () => {
    const recs = parseEfibootmgr(EFIBOOTMGR_17);
    expect(recs.map((r) => [r.num, r.active, r.label])).toEqual([
      ['0000', true, 'UiApp'],
      ['0001', true, 'UEFI QEMU QEMU HARDDISK'],
      ['0002', true, 'EFI Internal Shell'],
      ['0003', true, 'debian'],
      ['0004', false, 'ironic1'],
    ]);
    expect(recordLoader(recs[3]!)).toBe('\\EFI\\debian\\shimx64.efi');
    expect(recordLoader(recs[0]!)).toBeNull();
  });

  it('reads efibootmgr 18 and older space-separated records', () => {
    const [r18] = parseEfibootmgr(EFIBOOTMGR_18);
    expect(r18).toMatchObject({ num: '0005', label: 'debian' });
    expect(recordLoader(r18!)).toBe('\\EFI\\debian\\shimx64.efi');
    const [old] = parseEfibootmgr(EFIBOOTMGR_OLD);
    expect(old).toMatchObject({ num: '0007', label: 'ironic1', path: 'HD(2,MBR,0x1a2b3c4d,0x800,0x64000)/File(\\EFI\\BOOT\\BOOTX64.EFI)' });
  });

  it('finds duplicates by exact label, or by the same loader on the same partition', () => {
    const recs = parseEfibootmgr(EFIBOOTMGR_17 + EFIBOOTMGR_18);
    const guid = '8a1f7b3c-59e4-4c1e-9a6b-2f0c7d3e4b5a';
    // Same label: replaced. ("ironic10" would not match "ironic1": no substring matching.)
    expect(duplicateRecords(recs, { label: 'ironic1', loader: '\\EFI\\x.efi', partNumber: 1, partUuid: null }).map((r) => r.num)).toEqual(['0004']);
    // Same loader on the same partition under another label: both the v17 and the v18 record.
    expect(duplicateRecords(recs, { label: 'Debian GNU/Linux', loader: '\\efi\\debian\\SHIMX64.EFI', partNumber: 1, partUuid: guid }).map((r) => r.num)).toEqual([
      '0003',
      '0005',
    ]);
    // Another partition (another disk's ESP, e.g. a RAID member) is left alone.
    expect(duplicateRecords(recs, { label: 'x', loader: '\\EFI\\debian\\shimx64.efi', partNumber: 1, partUuid: '11111111-2222-3333-4444-555555555555' })).toEqual([]);
    expect(duplicateRecords(recs, { label: 'x', loader: '\\EFI\\debian\\shimx64.efi', partNumber: 1, partUuid: null })).toEqual([]);
    expect(duplicateRecords(parseEfibootmgr(EFIBOOTMGR_OLD), { label: 'y', loader: '\\EFI\\BOOT\\BOOTX64.EFI', partNumber: 2, partUuid: '0x1A2B3C4D' })).toHaveLength(1);
  });

  it('builds the command lines IPA runs', () => {
    expect(efibootmgrCreateArgs('/dev/sda', 1, 'debian', '\\EFI\\debian\\shimx64.efi')).toEqual([
      '-v', '-c', '-d', '/dev/sda', '-p', '1', '-w', '-L', 'debian', '-l', '\\EFI\\debian\\shimx64.efi',
    ]);
    expect(efibootmgrDeleteArgs('0004')).toEqual(['-b', '0004', '-B']);
  });
});

describe('NVRAM entries are idempotent', () => {
  const loaders = [{ loader: '\\EFI\\debian\\shimx64.efi', label: 'debian', source: 'EFI/debian/BOOTX64.CSV' }];

  it('a rerun replaces its entry instead of adding another', async () => {
    const nvram = new SimulatedNvram({ '/dev/sda:1': 'aaaaaaaa-0000-0000-0000-000000000001' });
    // What was there before: firmware entries and a stale entry for the same loader under another label.
    nvram.efibootmgr(['-c', '-d', '/dev/sda', '-p', '1', '-L', 'Debian (old)', '-l', '\\EFI\\debian\\shimx64.efi']);
    nvram.efibootmgr(['-c', '-d', '/dev/sdb', '-p', '1', '-L', 'other disk', '-l', '\\EFI\\debian\\shimx64.efi']);
    const host = new FakeHost({ run: (cmd, args) => (cmd === 'efibootmgr' ? nvram.efibootmgr(args) : ok('')) });
    const target = { disk: '/dev/sda', partNumber: 1, partUuid: 'aaaaaaaa-0000-0000-0000-000000000001' };
    for (let i = 0; i < 3; i++) await writeNvramEntries(host, silentLogger(), loaders, [target]);
    expect(nvram.entries.map((e) => [e.label, e.disk])).toEqual([
      ['debian', '/dev/sda'],
      ['other disk', '/dev/sdb'],
    ]);
    expect(host.commands.filter((c) => c.args.includes('-c'))).toHaveLength(3);
  });

  it('RAID members get one entry each, told apart by a suffix, and keep them on reruns', async () => {
    const nvram = new SimulatedNvram({ '/dev/sda:3': 'aaaaaaaa-0000-0000-0000-000000000003', '/dev/sdb:3': 'bbbbbbbb-0000-0000-0000-000000000003' });
    const host = new FakeHost({ run: (cmd, args) => (cmd === 'efibootmgr' ? nvram.efibootmgr(args) : ok('')) });
    const targets = [
      { disk: '/dev/sda', partNumber: 3, partUuid: 'aaaaaaaa-0000-0000-0000-000000000003', labelSuffix: '(RAID, part0)' },
      { disk: '/dev/sdb', partNumber: 3, partUuid: 'bbbbbbbb-0000-0000-0000-000000000003', labelSuffix: '(RAID, part1)' },
    ];
    await writeNvramEntries(host, silentLogger(), loaders, targets);
    await writeNvramEntries(host, silentLogger(), loaders, targets);
    expect(nvram.entries.map((e) => [e.label, e.disk, e.part]).sort()).toEqual([
      ['debian (RAID, part0)', '/dev/sda', 3],
      ['debian (RAID, part1)', '/dev/sdb', 3],
    ]);
  });
});
