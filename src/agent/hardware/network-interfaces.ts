// Network interfaces from /sys/class/net: the ones IPA would report (physical NICs, bonds, VLANs),
// or exactly the ones named with --interfaces (any kind, so tests can use veth pairs).
import type { Host } from '../host/host.js';

export interface NetInterface {
  name: string;
  macAddress: string;
}

const ZERO_MAC = '00:00:00:00:00:00';
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Normalises a MAC to lowercase colon form; accepts pxelinux `01-aa-bb-…` BOOTIF values. */
export function normaliseMac(raw: string): string | null {
  let v = raw.trim().toLowerCase().replace(/-/g, ':');
  if (/^01:([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(v)) v = v.slice(3);
  return MAC_RE.test(v) ? v : null;
}

async function macOf(host: Host, name: string): Promise<string | null> {
  const raw = await host.readTextOrNull(`/sys/class/net/${name}/address`);
  const mac = raw ? normaliseMac(raw) : null;
  return mac && mac !== ZERO_MAC ? mac : null;
}

/** IPA's rule: has a device/ link, or is a bond, or is a VLAN named x.<n>; never lo or bridges. */
async function isReportable(host: Host, name: string): Promise<boolean> {
  if (name === 'lo') return false;
  if (await host.exists(`/sys/class/net/${name}/bridge`)) return false;
  if (await host.exists(`/sys/class/net/${name}/device`)) return true;
  if (await host.exists(`/sys/class/net/${name}/bonding`)) return true;
  return /\.\d+$/.test(name);
}

export async function listInterfaces(host: Host, only: readonly string[] | null): Promise<NetInterface[]> {
  const names = only ? [...only] : await host.readdir('/sys/class/net');
  const out: NetInterface[] = [];
  for (const name of names) {
    if (!only && !(await isReportable(host, name))) continue;
    const mac = await macOf(host, name);
    if (mac) out.push({ name, macAddress: mac });
  }
  return out;
}
