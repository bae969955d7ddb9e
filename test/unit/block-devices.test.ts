import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { deviceBasename, listDisks, parseLsblk, partitionsThenDisk, type BlockDevice } from '../../src/agent/hardware/block-devices.js';
import { FakeHost, ok } from './support/fake-host.js';

const FIXTURES = join(import.meta.dirname, '../fixtures/lsblk');
const lsblk = (name: string) => readFileSync(join(FIXTURES, name), 'utf8');
const COLUMNS = 'KNAME,NAME,MODEL,SIZE,ROTA,TYPE,UUID,PARTUUID,SERIAL,LOG-SEC,PHY-SEC,TRAN,FSTYPE,PARTTYPE,RO,HCTL,WWN,VENDOR';

const byName = (devs: BlockDevice[], kname: string): BlockDevice => {
  const found = devs.find((d) => d.kname === kname);
  if (!found) throw new Error(`no ${kname}`);
  return found;
};

describe('parseLsblk on output captured from this machine (util-linux 2.38)', () => {
  const devs = parseLsblk(lsblk('this-machine.json'));

  it('reads every device with /dev names, sizes in bytes and real booleans', () => {
    expect(devs.map((d) => d.kname)).toEqual(['loop0', 'loop1', 'loop2', 'loop3', 'loop4', 'loop5', 'loop6', 'loop7', 'zram0', 'vda']);
    expect(byName(devs, 'vda')).toEqual({
      name: '/dev/vda',
      kname: 'vda',
      type: 'disk',
      model: null,
      vendor: '0x1af4',
      size: 274877906944,
      rotational: true,
      readOnly: false,
      serial: null,
      wwn: null,
      hctl: null,
      tran: null,
      uuid: null,
      partuuid: null,
      fstype: null,
      parttype: null,
      logicalSectorSize: 512,
      physicalSectorSize: 4096,
      children: [],
    });
    expect(byName(devs, 'loop0')).toMatchObject({ type: 'loop', size: 0, rotational: true });
    expect(byName(devs, 'loop1').rotational).toBe(false);
    expect(byName(devs, 'zram0')).toMatchObject({ type: 'disk', size: 0, logicalSectorSize: 4096 });
  });
});

describe('parseLsblk on a hand-checked nested example', () => {
  const devs = parseLsblk(lsblk('nested.json'));

  it('reads the disk columns, trimming padded vendor strings', () => {
    expect(byName(devs, 'sda')).toMatchObject({
      name: '/dev/sda',
      model: 'Samsung SSD 860 EVO 500GB',
      vendor: 'ATA',
      size: 500107862016,
      rotational: false,
      serial: 'S3Z9NB0K123456A',
      wwn: '0x5002538e40a1b2c3',
      hctl: '0:0:0:0',
      tran: 'sata',
      logicalSectorSize: 512,
      physicalSectorSize: 512,
      readOnly: false,
    });
    expect(byName(devs, 'sdb')).toMatchObject({ rotational: true, physicalSectorSize: 4096, vendor: 'ATA' });
    expect(byName(devs, 'nvme0n1')).toMatchObject({ tran: 'nvme', logicalSectorSize: 4096, wwn: 'eui.36344630529001230025384500000001', vendor: null });
    expect(byName(devs, 'sdc')).toMatchObject({ size: 0, readOnly: true });
  });

  it('nests partitions and holders with their filesystem and partition types', () => {
    const sda = byName(devs, 'sda');
    expect(sda.children.map((c) => [c.name, c.type, c.fstype])).toEqual([
      ['/dev/sda1', 'part', 'vfat'],
      ['/dev/sda2', 'part', 'LVM2_member'],
      ['/dev/sda10', 'part', null],
    ]);
    expect(sda.children[0]).toMatchObject({
      uuid: '1A2B-3C4D',
      partuuid: '5f3e2c1a-0b9d-4e8f-a7c6-b5d4e3f2a1b0',
      parttype: 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b',
      size: 536870912,
    });
    // The device-mapper child is named by its kernel name, not the mapper name.
    expect(sda.children[1]!.children.map((c) => [c.name, c.type, c.fstype])).toEqual([['/dev/dm-0', 'lvm', 'ext4']]);
    const md = byName(devs, 'sdb').children[0]!.children[0]!;
    expect([md.name, md.type]).toEqual(['/dev/md127', 'raid1']);
    expect(md.children.map((c) => c.name)).toEqual(['/dev/md127p1']);
  });

  it('falls back to NAME when KNAME is missing, and to "unknown" type', () => {
    const [d] = parseLsblk(JSON.stringify({ blockdevices: [{ name: 'vdz', size: 1 }] }));
    expect(d).toMatchObject({ name: '/dev/vdz', kname: 'vdz', type: 'unknown', size: 1, rotational: false });
  });

  it('accepts an empty or device-less document', () => {
    expect(parseLsblk('{"blockdevices": []}')).toEqual([]);
    expect(parseLsblk('{}')).toEqual([]);
    expect(() => parseLsblk('lsblk: unknown column')).toThrow(SyntaxError);
  });
});

describe('parseLsblk on old util-linux output (everything a string)', () => {
  const devs = parseLsblk(lsblk('legacy-strings.json'));

  it('converts "1"/"0" and numeric strings; empty strings become null', () => {
    expect(byName(devs, 'sda')).toMatchObject({
      model: 'QEMU HARDDISK',
      size: 21474836480,
      rotational: true,
      readOnly: false,
      logicalSectorSize: 512,
      vendor: 'ATA',
    });
    expect(byName(devs, 'sda').children[0]).toMatchObject({ name: '/dev/sda1', size: 21473787904, parttype: '0x83', partuuid: '1a2b3c4d-01' });
    expect(byName(devs, 'sdb')).toMatchObject({
      model: null,
      size: 0,
      rotational: false,
      readOnly: true,
      serial: null,
      uuid: null,
      tran: null,
      hctl: null,
      wwn: null,
      vendor: null,
      logicalSectorSize: null,
    });
  });
});

describe('partitionsThenDisk', () => {
  const devs = parseLsblk(lsblk('nested.json'));

  it('lists partitions in reverse name order (as IPA sorts them), then the disk', () => {
    // Plain string order: sda2 > sda10 > sda1.
    expect(partitionsThenDisk(byName(devs, 'sda'))).toEqual(['/dev/sda2', '/dev/sda10', '/dev/sda1', '/dev/sda']);
    expect(partitionsThenDisk(byName(devs, 'nvme0n1'))).toEqual(['/dev/nvme0n1p2', '/dev/nvme0n1p1', '/dev/nvme0n1']);
  });

  it('includes partitions nested under holders but not the holders themselves', () => {
    // sdb1 → md127 (raid1, not listed) → md127p1 (part, listed); sda2 → dm-0 (lvm, not listed)
    expect(partitionsThenDisk(byName(devs, 'sdb'))).toEqual(['/dev/sdb1', '/dev/md127p1', '/dev/sdb']);
    expect(partitionsThenDisk(byName(devs, 'sda'))).not.toContain('/dev/dm-0');
  });

  it('is just the disk without partitions', () => {
    expect(partitionsThenDisk(byName(devs, 'sdc'))).toEqual(['/dev/sdc']);
  });
});

describe('listDisks', () => {
  it('keeps the disks IPA would consider: no loop, zram, ram, rom or empty devices', async () => {
    const host = new FakeHost({ run: () => ok(lsblk('this-machine.json')) });
    expect((await listDisks(host)).map((d) => d.name)).toEqual(['/dev/vda']);
    expect(host.commands).toEqual([{ cmd: 'lsblk', args: ['-bia', '--json', '-o', COLUMNS] }]);

    const nested = new FakeHost({ run: () => ok(lsblk('nested.json')) });
    expect((await listDisks(nested)).map((d) => d.name)).toEqual(['/dev/sda', '/dev/sdb', '/dev/nvme0n1']);
  });

  it('with an allow-list asks lsblk for exactly the present listed devices, whatever their type', async () => {
    const loop = JSON.stringify({
      blockdevices: [{ kname: 'loop3', name: 'loop3', size: 1073741824, rota: false, type: 'loop', ro: false }],
    });
    const host = new FakeHost({
      deviceAllowList: ['/dev/loop3', '/dev/loop9'],
      dirs: ['/dev/loop3'],
      run: () => ok(loop),
    });
    const disks = await listDisks(host);
    expect(disks.map((d) => [d.name, d.type])).toEqual([['/dev/loop3', 'loop']]);
    expect(host.commands[0]!.args).toEqual(['-bia', '--json', '-o', COLUMNS, '/dev/loop3']);
  });

  it('with an allow-list of absent devices does not run lsblk at all', async () => {
    const host = new FakeHost({ deviceAllowList: ['/dev/loop9'] });
    expect(await listDisks(host)).toEqual([]);
    expect(host.commands).toEqual([]);
  });
});

describe('deviceBasename', () => {
  it('is the last path component', () => {
    expect(deviceBasename('/dev/nvme0n1p1')).toBe('nvme0n1p1');
    expect(deviceBasename('sda')).toBe('sda');
  });
});
