// The inventory collectors against real machine captures (test/fixtures/machines/*, made with
// scripts/capture-machine.sh; the QEMU ones with scripts/capture-vm/). Every expected value is
// read from the captured raw data here, independently of the collectors: lscpu for the CPU,
// /proc/meminfo and dmidecode for memory, lsblk + the udev database + /dev/disk/by-path for
// disks, sysfs + `ip -j addr` for NICs, ipmitool for the BMC. Known machines also get checks
// against the hardware QEMU was given.
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { collectBmc } from '../../src/agent/hardware/inventory/bmc.js';
import { collectCpu } from '../../src/agent/hardware/inventory/cpu.js';
import { collectDisks } from '../../src/agent/hardware/inventory/disks.js';
import { collectInventory } from '../../src/agent/hardware/inventory/index.js';
import { collectInterfaces } from '../../src/agent/hardware/inventory/interfaces.js';
import { collectMemory } from '../../src/agent/hardware/inventory/memory.js';
import { parseSmbios } from '../../src/agent/hardware/inventory/smbios.js';
import { Inventory, schemaErrors } from '../../src/protocol/index.js';
import type { Inventory as InventoryData, InventoryDisk, InventoryInterface } from '../../src/protocol/inventory.js';
import { FixtureHost, loadRecordedCommands, type RecordedCommand } from '../helpers/fixture-host.js';

const MACHINES = join(import.meta.dirname, '../fixtures/machines');
const machineNames = readdirSync(MACHINES)
  .filter((n) => statSync(join(MACHINES, n)).isDirectory())
  .sort();

/** Raw access to one capture, for computing the expected values. */
class Capture {
  readonly fs: string;
  readonly commands: RecordedCommand[];
  constructor(readonly dir: string) {
    this.fs = join(dir, 'fs');
    this.commands = loadRecordedCommands(dir);
  }
  file(path: string): string | null {
    try {
      return readFileSync(join(this.fs, path), 'utf8');
    } catch {
      return null;
    }
  }
  has(path: string): boolean {
    return existsSync(join(this.fs, path));
  }
  ls(path: string): string[] {
    try {
      return readdirSync(join(this.fs, path)).filter((n) => n !== '.keep').sort();
    } catch {
      return [];
    }
  }
  link(path: string): string | null {
    try {
      return readlinkSync(join(this.fs, path));
    } catch {
      return null;
    }
  }
  cmd(cmd: string, ...args: string[]): RecordedCommand | undefined {
    return this.commands.find((c) => c.cmd === cmd && JSON.stringify(c.args) === JSON.stringify(args));
  }
  ok(cmd: string, ...args: string[]): string | null {
    const c = this.cmd(cmd, ...args);
    return c && c.exitCode === 0 ? c.stdout : null;
  }
}

const LSBLK_ARGS = ['-bia', '--json', '-o', 'KNAME,NAME,MODEL,SIZE,ROTA,TYPE,UUID,PARTUUID,SERIAL,LOG-SEC,PHY-SEC,TRAN,FSTYPE,PARTTYPE,RO,HCTL,WWN,VENDOR'];

function lscpuField(out: string, name: string): string | null {
  const m = new RegExp(`^${name.replace(/[()]/g, '\\$&')}:\\s*(.*)$`, 'm').exec(out);
  return m ? m[1]!.trim() : null;
}

/** Sizes of the populated "Memory Device" entries dmidecode printed, in MiB. */
function dmidecodeDimmMiB(out: string): number[] {
  const sizes: number[] = [];
  for (const block of out.split(/\n\n+/)) {
    if (!/^Memory Device$/m.test(block)) continue;
    const m = /^\s+Size:\s*(\d+)\s*(kB|MB|GB|TB)$/m.exec(block);
    if (!m) continue;
    const unit = { kB: 1 / 1024, MB: 1, GB: 1024, TB: 1024 * 1024 }[m[2] as 'kB' | 'MB' | 'GB' | 'TB'];
    sizes.push(Number(m[1]) * unit);
  }
  return sizes;
}

function dmidecodeSection(out: string, title: string): Record<string, string> {
  const block = out.split(/\n\n+/).find((b) => new RegExp(`^${title}$`, 'm').test(b)) ?? '';
  const fields: Record<string, string> = {};
  for (const m of block.matchAll(/^\t([^\t:][^:]*):\s*(.*)$/gm)) fields[m[1]!] = m[2]!.trim();
  return fields;
}

interface LsblkRow {
  kname: string;
  model: string | null;
  size: number;
  rota: boolean;
  type: string;
  serial: string | null;
  wwn: string | null;
  hctl: string | null;
  tran: string | null;
  vendor: string | null;
  'log-sec': number | null;
  'phy-sec': number | null;
  children?: LsblkRow[];
}

/** Every row of the lsblk tree once, parents first (lsblk repeats an md array under each member). */
function flattenLsblk(rows: LsblkRow[]): LsblkRow[] {
  const out = new Map<string, LsblkRow>();
  const walk = (rs: LsblkRow[]) => {
    for (const r of rs) {
      if (!out.has(r.kname)) out.set(r.kname, r);
      walk(r.children ?? []);
    }
  };
  walk(rows);
  return [...out.values()];
}

/** The disks IPA reports: disks and RAID volumes with a size, no ram/zram/floppy/cdrom. */
function expectedDiskRows(cap: Capture): LsblkRow[] {
  const doc = JSON.parse(cap.ok('lsblk', ...LSBLK_ARGS) ?? '{"blockdevices":[]}') as { blockdevices: LsblkRow[] };
  return flattenLsblk(doc.blockdevices).filter(
    (r) => (r.type === 'disk' || r.type.startsWith('raid') || r.type === 'mpath') && r.size > 0 && !/^(ram|zram|fd|sr)\d/.test(r.kname),
  );
}

function udevProps(cap: Capture, kname: string): Record<string, string> {
  const dev = cap.file(`/sys/class/block/${kname}/dev`)?.trim();
  const text = dev ? cap.file(`/run/udev/data/b${dev}`) : null;
  const props: Record<string, string> = {};
  for (const line of (text ?? '').split('\n')) {
    const m = /^E:([^=]+)=(.*)$/.exec(line);
    if (m) props[m[1]!] = m[2]!;
  }
  return props;
}

function byPathLinks(cap: Capture, kname: string): string[] {
  return cap
    .ls('/dev/disk/by-path')
    .filter((l) => cap.link(`/dev/disk/by-path/${l}`)?.split('/').pop() === kname)
    .map((l) => `/dev/disk/by-path/${l}`);
}

interface IpAddr {
  ifname: string;
  addr_info?: Array<{ family: string; local: string; scope: string }>;
}

/** Per machine: what QEMU was given (or what this machine is known to have). */
const KNOWN: Record<string, (inv: InventoryData) => void> = {
  'qemu-nvme-virtio': (inv) => {
    expect(inv.system_vendor).toMatchObject({ manufacturer: 'FerrumLab', product_name: 'NVMe-Virtio-1', serial_number: 'FL-NVME-0001' });
    expect(inv.boot.current_boot_mode).toBe('bios');
    expect(inv.hostname).toBe('ferrum-nvme');
    expect(inv.bmc_address).toBeNull();
    expect(inv.cpu.count).toBe(2);
    expect(inv.memory.physical_mb).toBe(1024);
    const byName = new Map(inv.disks.map((d) => [d.name, d]));
    expect([...byName.keys()].sort()).toEqual(['/dev/nvme0n1', '/dev/nvme1n1', '/dev/vda']);
    expect(byName.get('/dev/nvme0n1')).toMatchObject({ size: 1024 ** 3, serial: 'FERRUMNVME0001', rotational: false, hctl: null, tran: 'nvme' });
    expect(byName.get('/dev/nvme1n1')).toMatchObject({ size: 3 * 1024 ** 3, serial: 'FERRUMNVME0002', rotational: false });
    expect(byName.get('/dev/nvme0n1')!.model).toMatch(/^QEMU NVMe Ctrl/);
    expect(byName.get('/dev/nvme0n1')!.by_path).toMatch(/^\/dev\/disk\/by-path\/pci-0000:00:0[0-9a-f]\.0-nvme-1$/);
    expect(byName.get('/dev/vda')).toMatchObject({ size: 2 * 1024 ** 3, serial: 'FERRUM-VIRTIO-ROOT', vendor: '0x1af4', hctl: null });
    expect(byName.get('/dev/vda')!.by_path).toMatch(/^\/dev\/disk\/by-path\/(pci|virtio-pci)-0000:00:0[0-9a-f]\.0$/);
    expect(inv.interfaces).toHaveLength(1);
    expect(inv.interfaces[0]).toMatchObject({ mac_address: '52:54:00:fe:01:01', vendor: '0x1af4', ipv4_address: '10.0.2.15', has_carrier: true, driver: 'virtio_net' });
  },
  'qemu-nics-bmc-sata': (inv) => {
    expect(inv.system_vendor).toMatchObject({ manufacturer: 'FerrumLab', product_name: 'NICs-BMC-SATA-1', serial_number: 'FL-BMC-0001' });
    expect(inv.boot.current_boot_mode).toBe('bios');
    expect(inv.bmc_address).toBe('192.0.2.100');
    expect(inv.bmc_mac).toBe('52:54:00:be:ef:01');
    expect(inv.cpu.count).toBe(4);
    expect(inv.cpu.socket_count).toBe(2);
    expect(inv.memory.physical_mb).toBe(2048);
    const nics = new Map(inv.interfaces.map((i) => [i.mac_address, i]));
    expect([...nics.keys()].sort()).toEqual(['52:54:00:fe:02:01', '52:54:00:fe:02:02', '52:54:00:fe:02:03']);
    // A virtio NIC's device/ is the virtio device, not the PCI function: virtio vendor and device id
    // 1 (network), as IPA reports them, and no PCI address.
    expect(nics.get('52:54:00:fe:02:01')).toMatchObject({ vendor: '0x1af4', product: '0x0001', driver: 'virtio_net', ipv4_address: '10.0.2.15', has_carrier: true, pci_address: null });
    // QEMU's user network advertises fec0::/64: the first IPv6 address is that (site) one.
    expect(nics.get('52:54:00:fe:02:01')!.ipv6_address).toBe('fec0::5054:ff:fefe:201');
    expect(nics.get('52:54:00:fe:02:02')).toMatchObject({ vendor: '0x8086', product: '0x100e', driver: 'e1000', ipv4_address: '192.0.2.21', has_carrier: true, speed_mbps: 1000, pci_address: '0000:00:03.0' });
    expect(nics.get('52:54:00:fe:02:03')).toMatchObject({ vendor: '0x8086', product: '0x10d3', driver: 'e1000e', ipv4_address: null, ipv6_address: null, has_carrier: false, speed_mbps: null });
    // By serial: the kernel names SATA disks in probe order, which is not the port order (in this
    // capture the disk on port 2 became sda).
    const bySerial = new Map(inv.disks.map((d) => [d.serial, d]));
    expect(bySerial.get('FERRUMSATA0')).toMatchObject({
      model: 'FERRUM-SSD-4G', size: 4 * 1024 ** 3, rotational: false, wwn: '0x5000c500a1b2c3d4',
      vendor: 'ATA', hctl: '0:0:0:0', by_path: '/dev/disk/by-path/pci-0000:00:1f.2-ata-1', tran: 'sata',
    });
    expect(bySerial.get('FERRUMSATA1')).toMatchObject({
      model: 'FERRUM-HDD-8G', size: 8 * 1024 ** 3, rotational: true, wwn: '0x5000c500a1b2c3d5',
      hctl: '1:0:0:0', by_path: '/dev/disk/by-path/pci-0000:00:1f.2-ata-2',
    });
    expect(inv.disks.map((d) => d.name).sort()).toEqual(['/dev/sda', '/dev/sdb']);
  },
  'qemu-raid1-uefi': (inv) => {
    expect(inv.system_vendor).toMatchObject({ manufacturer: 'FerrumLab', product_name: 'RAID1-UEFI-1', serial_number: 'FL-RAID-0001' });
    expect(inv.system_vendor.firmware?.vendor).toMatch(/EDK II|EFI Development Kit/);
    expect(inv.boot.current_boot_mode).toBe('uefi');
    // The built-in QEMU BMC has no LAN channel: /dev/ipmi0 exists but `ipmitool lan print` fails.
    expect(inv.bmc_address).toBeNull();
    expect(inv.bmc_v6address).toBeNull();
    const disks = new Map(inv.disks.map((d) => [d.name, d]));
    // The array, nested under both members in lsblk's tree, is reported once (members are virtio: rotational).
    expect(disks.get('/dev/md0')).toMatchObject({ size: 1071644672, rotational: true, hctl: null, serial: null, by_path: null });
    expect(disks.get('/dev/md0')!.size).toBeGreaterThan(1000 * 1024 ** 2);
    expect(disks.get('/dev/sda')).toMatchObject({ serial: 'FERRUMSCSI0', wwn: '0x6001405abcdef001', vendor: 'QEMU', tran: null });
    expect(disks.get('/dev/sda')!.hctl).toMatch(/^\d+:0:0:0$/);
    expect(disks.get('/dev/sda')!.by_path).toMatch(/-scsi-0:0:0:0$/);
    expect([...disks.values()].filter((d) => /^FERRUM-RAID-[AB]$/.test(d.serial ?? ''))).toHaveLength(2);
  },
};

describe.each(machineNames)('inventory of the captured machine %s', (name) => {
  const dir = join(MACHINES, name);
  const cap = new Capture(dir);
  const host = () => new FixtureHost(dir);

  it('validates against the Inventory schema and matches what is known about the machine', async () => {
    const inv = await collectInventory(host(), { bootif: null, interfaces: null });
    expect(schemaErrors(Inventory, inv)).toEqual([]);
    expect(inv.hostname).toBe(cap.file('/proc/sys/kernel/hostname')!.trim());
    expect(inv.boot).toEqual({ current_boot_mode: cap.has('/sys/firmware/efi') ? 'uefi' : 'bios', pxe_interface: null });
    KNOWN[name]?.(inv);
  });

  it('cpu: count, model, architecture, flags and frequency as lscpu printed them', async () => {
    const lscpu = cap.ok('lscpu');
    expect(lscpu).not.toBeNull();
    const cpu = await collectCpu(host());
    expect(cpu.count).toBe(Number(lscpuField(lscpu!, 'CPU(s)')));
    expect(cpu.model_name).toBe(lscpuField(lscpu!, 'Model name'));
    expect(cpu.architecture).toBe(lscpuField(lscpu!, 'Architecture'));
    expect(cpu.flags).toEqual(lscpuField(lscpu!, 'Flags')!.split(/\s+/));
    const sockets = lscpuField(lscpu!, 'Socket(s)');
    if (sockets) expect(cpu.socket_count).toBe(Number(sockets));
    const max = lscpuField(lscpu!, 'CPU max MHz');
    const cpuinfoMhz = /^cpu MHz\s*:\s*(.*)$/m.exec(cap.file('/proc/cpuinfo') ?? '')?.[1];
    const expected = max ?? cpuinfoMhz ?? null;
    if (expected === null) expect(cpu.frequency).toBeNull();
    else expect(Number(cpu.frequency)).toBeCloseTo(Number(expected), 3);
    // The JSON flavour agrees with the plain one (a check on the capture itself).
    const json = JSON.parse(cap.ok('lscpu', '-J')!) as { lscpu: Array<{ field: string; data: string }> };
    expect(json.lscpu.find((f) => f.field === 'CPU(s):')?.data).toBe(lscpuField(lscpu!, 'CPU(s)'));
  });

  it('memory: total from /proc/meminfo, physical_mb the DIMM sizes dmidecode printed', async () => {
    const table = await host().readBytesOrNull('/sys/firmware/dmi/tables/DMI');
    const mem = await collectMemory(host(), table ? parseSmbios(table) : null);
    const kb = /^MemTotal:\s+(\d+) kB$/m.exec(cap.file('/proc/meminfo')!)![1]!;
    expect(mem.total).toBe(Number(kb) * 1024);
    const dmi = cap.ok('dmidecode', '-t', 'bios', '-t', 'processor', '-t', 'memory');
    const dimms = dmi ? dmidecodeDimmMiB(dmi) : [];
    expect(mem.physical_mb).toBe(dimms.length > 0 ? dimms.reduce((a, b) => a + b, 0) : null);
    if (mem.physical_mb !== null) expect(mem.physical_mb * 1024 * 1024).toBeGreaterThanOrEqual(mem.total);
  });

  it('system_vendor from the DMI data dmidecode and /sys/class/dmi/id show', async () => {
    const inv = await collectInventory(host(), { bootif: null, interfaces: null });
    const id = (f: string) => cap.file(`/sys/class/dmi/id/${f}`)?.trim() ?? '';
    expect(inv.system_vendor).toMatchObject({ manufacturer: id('sys_vendor'), product_name: id('product_name'), serial_number: id('product_serial') });
    const dmi = cap.ok('dmidecode', '-t', 'bios', '-t', 'processor', '-t', 'memory');
    const bios = dmi ? dmidecodeSection(dmi, 'BIOS Information') : {};
    expect(inv.system_vendor.firmware).toEqual({ vendor: bios['Vendor'] ?? '', version: bios['Version'] ?? '', build_date: bios['Release Date'] ?? '' });
  });

  it('disks: every lsblk disk with its size, model, serial, wwn, hctl and by-path', async () => {
    const disks = await collectDisks(host());
    const rows = expectedDiskRows(cap);
    expect(disks.map((d) => d.name).sort()).toEqual(rows.map((r) => `/dev/${r.kname}`).sort());
    for (const r of rows) {
      const d = disks.find((x) => x.name === `/dev/${r.kname}`) as InventoryDisk;
      const udev = udevProps(cap, r.kname);
      const paths = byPathLinks(cap, r.kname);
      const sysVendor = cap.file(`/sys/class/block/${r.kname}/device/vendor`)?.trim();
      const scsi = cap.ls(`/sys/block/${r.kname}/device/scsi_device`);
      expect(d).toEqual({
        name: `/dev/${r.kname}`,
        model: r.model?.trim() || null,
        size: r.size,
        rotational: r.rota,
        wwn: udev['ID_WWN'] ?? r.wwn ?? null,
        serial: r.serial?.trim() || udev['ID_SERIAL_SHORT'] || udev['ID_SERIAL'] || null,
        vendor: sysVendor || r.vendor?.trim() || null,
        wwn_with_extension: udev['ID_WWN_WITH_EXTENSION'] ?? null,
        wwn_vendor_extension: udev['ID_WWN_VENDOR_EXTENSION'] ?? null,
        hctl: scsi[0] ?? r.hctl ?? null,
        by_path: paths.length ? paths.reduce((a, b) => (b.length < a.length ? b : a)) : null,
        logical_sectors: r['log-sec'],
        physical_sectors: r['phy-sec'],
        tran: r.tran ?? null,
      });
      if (r.hctl) expect(d.hctl).toBe(r.hctl);
    }
  });

  it('interfaces: MACs, addresses, carrier, vendor/product, speed and driver from sysfs and ip', async () => {
    const nics = await collectInterfaces(host(), null);
    const ip = JSON.parse(cap.ok('ip', '-j', 'addr', 'show') ?? '[]') as IpAddr[];
    const expectedNames = cap
      .ls('/sys/class/net')
      .filter((n) => n !== 'lo' && !cap.has(`/sys/class/net/${n}/bridge`))
      .filter((n) => cap.has(`/sys/class/net/${n}/device`) || cap.has(`/sys/class/net/${n}/bonding`) || /\.\d+$/.test(n))
      .filter((n) => !/^0{2}(:00){5}$/.test(cap.file(`/sys/class/net/${n}/address`)?.trim() ?? '00:00:00:00:00:00'));
    expect(nics.map((n) => n.name).sort()).toEqual(expectedNames);
    for (const n of nics as InventoryInterface[]) {
      const base = `/sys/class/net/${n.name}`;
      const addrs = ip.find((l) => l.ifname === n.name)?.addr_info ?? [];
      const v4 = addrs.find((a) => a.family === 'inet');
      const v6 = addrs.find((a) => a.family === 'inet6');
      const speed = cap.file(`${base}/speed`)?.trim();
      const driver = cap.link(`${base}/device/driver`);
      expect(n).toEqual({
        name: n.name,
        mac_address: cap.file(`${base}/address`)!.trim().toLowerCase(),
        ipv4_address: v4?.local ?? null,
        ipv6_address: v6 ? (v6.scope === 'link' ? `${v6.local}%${n.name}` : v6.local) : null,
        has_carrier: cap.file(`${base}/carrier`)?.trim() === '1',
        lldp: null,
        vendor: cap.file(`${base}/device/vendor`)?.trim() ?? null,
        product: cap.file(`${base}/device/device`)?.trim() ?? null,
        client_id: null,
        biosdevname: cap.ok('biosdevname', '-i', n.name)?.trim() || null,
        speed_mbps: speed && /^\d+$/.test(speed) ? Number(speed) : null,
        pci_address: expect.toSatisfy((v: string | null) => v === null || /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]$/.test(v)),
        driver: driver ? driver.split('/').pop() : null,
      });
    }
  });

  it('bmc: the first address ipmitool lan print gave, or null when there is no BMC or it fails', async () => {
    const bmc = await collectBmc(host());
    const hasDevice = ['/dev/ipmi0', '/dev/ipmi/0', '/dev/ipmidev/0'].some((p) => cap.has(p));
    const answers = Array.from({ length: 11 }, (_, i) => cap.ok('ipmitool', 'lan', 'print', String(i + 1)));
    if (!hasDevice || answers.every((a) => a === null)) {
      expect(bmc).toEqual({ bmc_address: null, bmc_v6address: null });
      return;
    }
    const field = (out: string, f: string) => new RegExp(`^${f}\\s*:\\s*(.+)$`, 'm').exec(out)?.[1]?.trim() ?? null;
    const hit = answers.findIndex((a) => a !== null && field(a, 'IP Address') !== null && field(a, 'IP Address') !== '0.0.0.0');
    expect(bmc.bmc_address).toBe(hit >= 0 ? field(answers[hit]!, 'IP Address') : '0.0.0.0');
    if (hit >= 0) expect(bmc.bmc_mac).toBe(field(answers[hit]!, 'MAC Address')?.toLowerCase());
    const v6 = cap.cmd('ipmitool', 'lan6', 'print', String(hit >= 0 ? hit + 1 : 1));
    if (!v6 || v6.exitCode !== 0) expect(bmc.bmc_v6address).toBeNull();
    else expect(bmc.bmc_v6address).toBe([...v6.stdout.matchAll(/Address:\s*([0-9a-fA-F:]+)\/\d+/g)].map((m) => m[1]).find((a) => a !== '::') ?? '::/0');
  });
});

describe('FixtureHost', () => {
  const dir = join(MACHINES, machineNames[0]!);

  it('replays recorded commands exactly and fails unrecorded ones like a missing tool', async () => {
    const host = new FixtureHost(dir);
    const rec = host.commands.find((c) => c.cmd === 'lsblk')!;
    expect(await host.run('lsblk', rec.args)).toEqual({ exitCode: rec.exitCode, stdout: rec.stdout, stderr: rec.stderr });
    await expect(host.run('lsblk', ['-J'])).rejects.toThrow(/is not installed/);
    expect((await host.run('nosuchtool', [], { allowFailure: true })).exitCode).toBe(127);
    expect(await host.hasCommand('lsblk')).toBe(true);
    expect(await host.hasCommand('nosuchtool')).toBe(false);
  });

  it('reads through captured symlinks and refuses destructive work', async () => {
    const host = new FixtureHost(dir);
    const nets = await host.readdir('/sys/class/net');
    expect(nets.length).toBeGreaterThan(0);
    expect(await host.realpath(`/sys/class/net/${nets[0]}`)).toMatch(/^\/sys\/devices\//);
    expect(await host.readdir('/')).not.toContain('.keep');
    await expect(host.assertMayDestroy('/dev/sda')).rejects.toThrow(/replayed capture/);
    await expect(host.openForWrite('/dev/sda')).rejects.toThrow(/replayed capture/);
    await expect(host.power('off')).rejects.toThrow();
  });
});
