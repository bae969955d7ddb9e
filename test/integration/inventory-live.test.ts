// The inventory of this very machine against the tools an operator would ask: lscpu (text and
// -J), /proc/meminfo, lsblk -b -J, ip -j link / ip -j addr, dmidecode, /sys/firmware/efi. Then the
// same through the running agent: poll.get_hardware_info via the typed client must give an
// inventory valid against the schema and equal to the in-process one (modulo volatile fields).
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalHost } from '../../src/agent/host/host.js';
import { collectInventory } from '../../src/agent/hardware/inventory/index.js';
import { AgentClient } from '../../src/conductor/agent-client.js';
import { Inventory } from '../../src/protocol/inventory.js';
import { isValid, schemaErrors } from '../../src/protocol/validate.js';
import { freePort, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { captureLog } from '../unit/support/log-capture.js';
import { BASE_ARGS } from './support.js';

const exec = promisify(execFile);

async function tool(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(cmd, args, { env: { ...process.env, LC_ALL: 'C' }, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 127, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

/** `lscpu` text: "Key:   value" lines. */
function lscpuFields(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  return m;
}

/** `lscpu -J`: {lscpu: [{field: "Key:", data, children?}]}, flattened. */
function lscpuJsonFields(json: string): Map<string, string> {
  const m = new Map<string, string>();
  type Entry = { field: string; data: string | null; children?: Entry[] };
  const walk = (es: Entry[]) => {
    for (const e of es) {
      m.set(e.field.replace(/:$/, '').trim(), (e.data ?? '').trim());
      if (e.children) walk(e.children);
    }
  };
  walk((JSON.parse(json) as { lscpu: Entry[] }).lscpu);
  return m;
}

interface LsblkNode {
  name: string;
  kname: string;
  size: number;
  rota: boolean;
  model: string | null;
  serial: string | null;
  type: string;
  children?: LsblkNode[];
}

interface IpLink {
  ifname: string;
  address?: string;
  flags?: string[];
  addr_info?: Array<{ family: string; local: string; scope: string }>;
}

const DISK_TYPES = new Set(['disk', 'raid0', 'raid1', 'raid4', 'raid5', 'raid6', 'raid10', 'md', 'mpath']);

describe('the inventory of this machine agrees with the tools', () => {
  let inv: Inventory;

  beforeAll(async () => {
    const host = new LocalHost({ sysRoot: '/', devices: null, power: 'none', log: captureLog().log });
    inv = await collectInventory(host, { bootif: null, interfaces: null });
    expect(schemaErrors(Inventory, inv)).toEqual([]);
  });

  describe('cpu vs lscpu', () => {
    let text: Map<string, string>;
    let json: Map<string, string>;
    beforeAll(async () => {
      const t = await tool('lscpu', []);
      const j = await tool('lscpu', ['-J']);
      expect(t.code).toBe(0);
      expect(j.code).toBe(0);
      text = lscpuFields(t.stdout);
      json = lscpuJsonFields(j.stdout);
    });

    it('count is "CPU(s)" (logical CPUs)', () => {
      expect(inv.cpu.count).toBe(Number(text.get('CPU(s)')));
      expect(inv.cpu.count).toBe(Number(json.get('CPU(s)')));
    });

    it('model_name is "Model name"', () => {
      expect(inv.cpu.model_name).toBe(text.get('Model name') ?? null);
      expect(inv.cpu.model_name).toBe(json.get('Model name') ?? null);
    });

    it('architecture is "Architecture"', () => {
      expect(inv.cpu.architecture).toBe(text.get('Architecture'));
      expect(inv.cpu.architecture).toBe(json.get('Architecture'));
    });

    it('flags are lscpu\'s "Flags" and the first flags line of /proc/cpuinfo', () => {
      const flags = (text.get('Flags') ?? '').split(/\s+/).filter(Boolean);
      expect(flags.length).toBeGreaterThan(0);
      expect(inv.cpu.flags).toEqual(flags);
      expect(inv.cpu.flags).toEqual((json.get('Flags') ?? '').split(/\s+/).filter(Boolean));
      const line = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
      expect(inv.cpu.flags).toEqual(line![1]!.trim().split(/\s+/));
    });

    it('socket_count is "Socket(s)"', () => {
      const sockets = text.get('Socket(s)');
      if (sockets && /^\d+$/.test(sockets)) {
        expect(inv.cpu.socket_count).toBe(Number(sockets));
        expect(inv.cpu.socket_count).toBe(Number(json.get('Socket(s)')));
      } else {
        expect(inv.cpu.socket_count ?? null).toBeNull();
      }
    });

    it('frequency is "CPU max MHz", else the "cpu MHz" of /proc/cpuinfo, with four decimals', () => {
      const max = text.get('CPU max MHz');
      if (max) {
        expect(inv.cpu.frequency).toBe(Number(max).toFixed(4));
        return;
      }
      const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
      if (!mhz) return void expect(inv.cpu.frequency).toBeNull();
      expect(inv.cpu.frequency).toMatch(/^\d+\.\d{4}$/);
      // "cpu MHz" moves with the clock: only its order of magnitude is stable between two reads.
      expect(Math.abs(Number(inv.cpu.frequency) - Number(mhz[1])) / Number(mhz[1])).toBeLessThan(0.5);
    });
  });

  it('memory.total is MemTotal of /proc/meminfo in bytes; physical_mb the DIMMs, else the online memory blocks', async () => {
    const kb = /^MemTotal:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    expect(inv.memory.total).toBe(Number(kb![1]) * 1024);
    const dmi = await tool('dmidecode', ['-t', '17']);
    const sizes = [...dmi.stdout.matchAll(/^\s*Size:\s*(\d+)\s*(MB|GB|TB)\s*$/gm)].map((m) => Number(m[1]) * { MB: 1, GB: 1024, TB: 1024 * 1024 }[m[2] as 'MB']);
    if (dmi.code === 0 && sizes.length) expect(inv.memory.physical_mb).toBe(sizes.reduce((a, b) => a + b, 0));
    else {
      // What lshw (IPA's source) reports without DMI: online memory blocks × block size.
      const base = '/sys/devices/system/memory';
      const block = parseInt(readFileSync(`${base}/block_size_bytes`, 'utf8').trim(), 16);
      const online = readdirSync(base).filter((n) => /^memory\d+$/.test(n) && readFileSync(`${base}/${n}/online`, 'utf8').trim() === '1');
      expect(inv.memory.physical_mb).toBe((online.length * block) / 2 ** 20);
      expect(inv.memory.physical_mb! * 2 ** 20).toBeGreaterThanOrEqual(inv.memory.total);
    }
  });

  it('disks are every lsblk disk (name, size, rotational, model, serial)', async () => {
    const res = await tool('lsblk', ['-b', '-J', '-o', 'NAME,KNAME,SIZE,ROTA,MODEL,SERIAL,TYPE']);
    expect(res.code).toBe(0);
    const all: LsblkNode[] = [];
    const walk = (ns: LsblkNode[]) => ns.forEach((n) => (all.push(n), walk(n.children ?? [])));
    walk((JSON.parse(res.stdout) as { blockdevices: LsblkNode[] }).blockdevices);
    const expected = all.filter((n) => DISK_TYPES.has(n.type) && n.size > 0 && !/^(ram|zram|fd|sr)\d*/.test(n.kname));
    expect(expected.length).toBeGreaterThan(0);
    expect(inv.disks.map((d) => d.name).sort()).toEqual([...new Set(expected.map((n) => `/dev/${n.kname}`))].sort());
    for (const d of inv.disks) {
      const n = expected.find((e) => `/dev/${e.kname}` === d.name)!;
      expect({ name: d.name, size: d.size, rotational: d.rotational, model: d.model }).toEqual({
        name: `/dev/${n.kname}`,
        size: n.size,
        rotational: n.rota,
        model: n.model?.trim() || null,
      });
      // lsblk's SERIAL first; udev's ID_SERIAL_SHORT only where lsblk has none.
      if (n.serial?.trim()) expect(d.serial).toBe(n.serial.trim());
      else if (!existsSync('/run/udev/data')) expect(d.serial).toBeNull();
    }
  });

  it('interfaces agree with ip -j link / ip -j addr: MACs, first IPv4/IPv6, carrier', async () => {
    const [link, addr] = await Promise.all([tool('ip', ['-j', 'link', 'show']), tool('ip', ['-j', 'addr', 'show'])]);
    expect(link.code).toBe(0);
    expect(addr.code).toBe(0);
    const links = JSON.parse(link.stdout) as IpLink[];
    const addrs = new Map((JSON.parse(addr.stdout) as IpLink[]).map((l) => [l.ifname, l]));
    // IPA's choice: physical NICs (device/), bonds, VLANs; never lo, bridges or MAC-less links.
    const reportable = links.filter((l) => {
      const sys = `/sys/class/net/${l.ifname}`;
      if (l.ifname === 'lo' || existsSync(`${sys}/bridge`)) return false;
      if (!l.address || !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(l.address) || l.address === '00:00:00:00:00:00') return false;
      return existsSync(`${sys}/device`) || existsSync(`${sys}/bonding`) || /\.\d+$/.test(l.ifname);
    });
    expect(reportable.length).toBeGreaterThan(0);
    expect(inv.interfaces.map((i) => i.name)).toEqual(reportable.map((l) => l.ifname).sort());
    for (const i of inv.interfaces) {
      const l = links.find((x) => x.ifname === i.name)!;
      const infos = addrs.get(i.name)?.addr_info ?? [];
      const v4 = infos.find((a) => a.family === 'inet');
      const v6 = infos.find((a) => a.family === 'inet6');
      expect(i.mac_address).toBe(l.address);
      expect(i.ipv4_address).toBe(v4?.local ?? null);
      expect(i.ipv6_address).toBe(v6 ? (v6.scope === 'link' ? `${v6.local}%${i.name}` : v6.local) : null);
      expect(i.has_carrier).toBe((l.flags ?? []).includes('LOWER_UP'));
      expect(i.lldp).toBeNull();
    }
  });

  it('system_vendor is what dmidecode says, or "" where dmidecode cannot read SMBIOS either', async () => {
    const fields = [
      ['manufacturer', 'system-manufacturer'],
      ['product_name', 'system-product-name'],
      ['serial_number', 'system-serial-number'],
    ] as const;
    for (const [key, keyword] of fields) {
      const res = await tool('dmidecode', ['-s', keyword]);
      const value = res.stdout.trim();
      if (res.code === 0 && value && !value.startsWith('#')) {
        expect(inv.system_vendor[key]).toBe(value);
      } else {
        // No DMI here (e.g. a firecracker VM): dmidecode fails, and so the inventory has nothing either.
        expect(res.code).not.toBe(0);
        expect(existsSync('/sys/firmware/dmi/tables/DMI')).toBe(false);
        expect(inv.system_vendor[key]).toBe('');
      }
    }
    const bios = await tool('dmidecode', ['-s', 'bios-vendor']);
    if (bios.code !== 0) expect(inv.system_vendor.firmware).toEqual({ vendor: '', version: '', build_date: '' });
    else expect(inv.system_vendor.firmware?.vendor).toBe(bios.stdout.trim());
  });

  it('boot mode follows /sys/firmware/efi; no BOOTIF given, no PXE interface', () => {
    expect(inv.boot).toEqual({ current_boot_mode: existsSync('/sys/firmware/efi') ? 'uefi' : 'bios', pxe_interface: null });
  });

  it('hostname is the kernel hostname', () => {
    expect(inv.hostname).toBe(readFileSync('/proc/sys/kernel/hostname', 'utf8').trim());
    expect(inv.hostname).toBe(hostname());
  });

  it('the BMC fields follow ipmitool: null where it cannot talk to a BMC', async () => {
    const res = await tool('ipmitool', ['lan', 'print', '1']);
    if (res.code !== 0) {
      expect(inv.bmc_address).toBeNull();
      expect(inv.bmc_v6address).toBeNull();
      expect(inv).not.toHaveProperty('bmc_mac');
    } else {
      const ip = /^IP Address\s*:\s*(\S+)/m.exec(res.stdout)?.[1];
      if (ip && ip !== '0.0.0.0') expect(inv.bmc_address).toBe(ip);
    }
  });

  describe('through the running agent: poll.get_hardware_info', () => {
    let agent: AgentProcess | null = null;
    let client: AgentClient | null = null;

    beforeAll(async () => {
      agent = await startAgent({ args: [...BASE_ARGS], port: await freePort() });
      client = new AgentClient({ url: agent.url, requestTimeoutMs: 60_000 });
    });

    afterAll(async () => {
      await client?.close();
      await agent?.stop();
    });

    it('returns a schema-valid inventory equal to the in-process one (but for the moving CPU clock)', async () => {
      const remote = await client!.getHardwareInfo();
      expect(isValid(Inventory, remote)).toBe(true);
      const host = new LocalHost({ sysRoot: '/', devices: null, power: 'none', log: captureLog().log });
      const local = await collectInventory(host, { bootif: null, interfaces: null });
      const stable = (i: Inventory) => ({ ...i, cpu: { ...i.cpu, frequency: i.cpu.frequency === null ? null : 'MHz' } });
      expect(stable(remote)).toEqual(stable(local));
      // And the same as the inventory the tools were checked against above.
      expect(stable(remote)).toEqual(stable(inv));
    });
  });
});
