// Software RAID clean steps: which target_raid_config IPA accepts (agent-protocol.md §7.7), the
// partition table it picks, and the commands create_configuration runs in order. md itself cannot
// exist on this host (no md driver); the arrays are built for real in test/e2e/software-raid.
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/agent/log.js';
import { createSoftwareRaid, deleteSoftwareRaid, partitionTableType, softwareLogicalDisks, validateSoftwareRaid, type LogicalDisk } from '../../src/agent/hardware/software-raid.js';
import { FakeHost, ok } from './support/fake-host.js';

const log = silentLogger();
const ld = (raid_level: string, size_gb: number | 'MAX', extra: Partial<LogicalDisk> = {}): LogicalDisk => ({ raid_level, size_gb, controller: 'software', ...extra });

describe('software RAID configuration', () => {
  it('is only looked at when a logical disk asks for controller "software"', () => {
    expect(softwareLogicalDisks({ logical_disks: [{ raid_level: '1', size_gb: 'MAX' }] })).toBeNull();
    expect(softwareLogicalDisks({})).toBeNull();
    expect(softwareLogicalDisks(null)).toBeNull();
    expect(softwareLogicalDisks({ logical_disks: [ld('1', 'MAX')] })).toHaveLength(1);
  });

  it('accepts what IPA accepts and names the reason for what it refuses', () => {
    expect(() => validateSoftwareRaid([ld('1', 10), ld('0', 'MAX')], 2)).not.toThrow();
    expect(() => validateSoftwareRaid([ld('1', 10), ld('5', 'MAX')], 3)).not.toThrow();
    const refused: Array<[LogicalDisk[], number, RegExp]> = [
      [[ld('0', 'MAX')], 2, /first logical disk must be RAID-1/],
      [[ld('1', 10), ld('7', 'MAX')], 2, /RAID level 7 is not supported/],
      [[ld('1', 'MAX'), ld('0', 'MAX')], 2, /only one logical disk may have size_gb "MAX"/],
      [[ld('1', 'MAX'), ld('0', 10)], 2, /only the last logical disk may have size_gb "MAX"/],
      [[ld('1', 10), ld('1', 10), ld('1', 10)], 2, /at most 2 logical disks/],
      [[ld('1', 10), ld('5', 'MAX')], 2, /RAID 5 needs at least 3 disks, 2 available/],
      [[ld('1', 'MAX')], 1, /RAID 1 needs at least 2 disks/],
      [[ld('1', -3)], 2, /size_gb must be a positive number or "MAX"/],
      [[ld('1', 'MAX', { controller: 'megaraid' })], 2, /controller "software"/],
      [[ld('1', 'MAX', { physical_disks: [{ name: '/dev/sda' }] })], 2, /at least 2 disks/],
    ];
    for (const [disks, n, why] of refused) {
      let err: (Error & { type?: string }) | null = null;
      try {
        validateSoftwareRaid(disks, n);
      } catch (e) {
        err = e as Error & { type?: string };
      }
      expect(err?.message, JSON.stringify(disks)).toMatch(why);
      expect(err?.type).toBe('SoftwareRAIDError');
    }
  });

  it('uses disk_label from the capabilities, else gpt for UEFI and msdos for BIOS', () => {
    expect(partitionTableType({ properties: { capabilities: 'boot_mode:uefi' } })).toBe('gpt');
    expect(partitionTableType({ properties: { capabilities: 'boot_mode:bios' } })).toBe('msdos');
    expect(partitionTableType({ instance_info: { capabilities: { disk_label: 'gpt' } }, properties: { capabilities: 'boot_mode:bios' } })).toBe('gpt');
    expect(partitionTableType({ instance_info: { deploy_boot_mode: 'uefi' }, properties: { capabilities: 'disk_label:msdos' } })).toBe('msdos');
    // The boot mode is read as for partition images (IPA get_node_boot_mode): capabilities as a dict, any case.
    expect(partitionTableType({ properties: { capabilities: { boot_mode: 'UEFI' } } })).toBe('gpt');
    expect(partitionTableType({ properties: { capabilities: '{"boot_mode": "uefi"}' } })).toBe('gpt');
  });
});

/** Two 10 GiB virtio disks; after `parted mkpart` they show partition 1 (as lsblk would, after partprobe). */
class RaidHost extends FakeHost {
  /** Devices whose edges were zeroed (eraseDiskMetadata; the real thing is tested on loop devices). */
  readonly zeroed: string[] = [];
  override async assertMayDestroy(): Promise<void> {}
  override async openForWrite(device: string): Promise<never> {
    this.zeroed.push(device);
    const fh = { write: async () => ({ bytesWritten: 0 }), sync: async () => undefined, close: async () => undefined };
    return fh as never;
  }
}

function twoDiskHost(): RaidHost {
  let partitioned = false;
  const disk = (k: string) => ({
    kname: k, name: k, model: null, size: 10 * 2 ** 30, rota: false, type: 'disk', uuid: null, partuuid: null, serial: `S-${k}`,
    'log-sec': 512, 'phy-sec': 512, tran: 'virtio', fstype: null, parttype: null, ro: false, hctl: null, wwn: null, vendor: '0x1af4',
    children: partitioned ? [{ kname: `${k}1`, name: `${k}1`, size: 10 * 2 ** 30 - 2 ** 20, type: 'part', rota: false, ro: false }] : undefined,
  });
  return new RaidHost({
    run: (cmd, args) => {
      if (cmd === 'lsblk') return ok(JSON.stringify({ blockdevices: [disk('vda'), disk('vdb')] }));
      if (cmd === 'parted' && args.includes('mkpart')) partitioned = true;
      return ok('');
    },
  });
}

describe('create_configuration', () => {
  it('labels every disk, makes the RAID partition after the room for the ESP, and creates md0 from both', async () => {
    const host = twoDiskHost();
    const config = { logical_disks: [ld('1', 'MAX')] };
    const result = await createSoftwareRaid(host, { target_raid_config: config, properties: { capabilities: 'boot_mode:uefi' } }, log);
    expect(result).toEqual(config); // Ironic stores it as the node's raid_config
    const steps = host.commands.filter((c) => c.cmd === 'parted' || c.cmd === 'mdadm').map((c) => [c.cmd, ...c.args].join(' '));
    expect(steps).toEqual([
      'parted -s /dev/vda -- mklabel gpt',
      'parted -s /dev/vdb -- mklabel gpt',
      'parted -s -a optimal /dev/vda -- mkpart primary 551MiB -1',
      'parted -s -a optimal /dev/vdb -- mkpart primary 551MiB -1',
      'mdadm --create /dev/md0 --force --run --metadata=1 --level 1 --raid-devices 2 /dev/vda1 /dev/vdb1',
    ]);
  });

  it('refuses disks that are already partitioned, before touching any', async () => {
    const host = twoDiskHost();
    await createSoftwareRaid(host, { target_raid_config: { logical_disks: [ld('1', 'MAX')] } }, log);
    const before = host.commands.length;
    await expect(createSoftwareRaid(host, { target_raid_config: { logical_disks: [ld('1', 'MAX')] } }, log)).rejects.toThrow(/partitions detected on \/dev\/vda/);
    expect(host.commands.slice(before).filter((c) => c.cmd !== 'lsblk')).toEqual([]);
  });

  it('does nothing without a software logical disk', async () => {
    const host = twoDiskHost();
    expect(await createSoftwareRaid(host, { target_raid_config: { logical_disks: [{ raid_level: '1', size_gb: 'MAX' }] } }, log)).toEqual({});
    expect(host.commands).toEqual([]);
  });
});

describe('delete_configuration', () => {
  it('stops every array, zeroes the member superblocks and wipes the holder disks', async () => {
    const part = (k: string) => ({ kname: k, name: k, size: 5 * 2 ** 30, type: 'part', fstype: 'linux_raid_member', rota: false, ro: false });
    const disk = (k: string) => ({ kname: k, name: k, size: 10 * 2 ** 30, type: 'disk', rota: false, ro: false, children: [part(`${k}1`)] });
    const host = new RaidHost({
      files: { '/sys/block/md0/md/level': 'raid1\n', '/sys/block/md0/slaves/vda1': '', '/sys/block/md0/slaves/vdb1': '', '/sys/block/vda/size': '1\n' },
      run: (cmd) => (cmd === 'lsblk' ? ok(JSON.stringify({ blockdevices: [disk('vda'), disk('vdb')] })) : ok('')),
    });
    await deleteSoftwareRaid(host, log);
    const cmds = host.commands.filter((c) => c.cmd === 'mdadm' || c.cmd === 'wipefs').map((c) => [c.cmd, ...c.args].join(' '));
    expect(cmds).toEqual([
      'mdadm --stop /dev/md0',
      'mdadm --zero-superblock /dev/vda1',
      'mdadm --zero-superblock /dev/vdb1',
      'wipefs --force --all /dev/vda1 /dev/vda',
      'wipefs --force --all /dev/vdb1 /dev/vdb',
    ]);
    expect(host.zeroed).toEqual(['/dev/vda', '/dev/vdb']);
  });
});
