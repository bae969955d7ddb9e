// interfaces: the NICs lookup uses, with addresses from `ip -j addr` and the rest from sysfs.
import { posix } from 'node:path';
import type { InventoryInterface } from '../../../protocol/inventory.js';
import type { Host } from '../../host/host.js';
import { listInterfaces } from '../network-interfaces.js';

interface IpAddrInfo {
  family?: string;
  local?: string;
  scope?: string;
}
interface IpLink {
  ifname?: string;
  addr_info?: IpAddrInfo[];
}

/** First IPv4 and IPv6 address of each interface; link-local IPv6 carries "%ifname" as IPA's. */
export function addressesByInterface(ipJson: string): Map<string, { v4: string | null; v6: string | null }> {
  const out = new Map<string, { v4: string | null; v6: string | null }>();
  let links: IpLink[] = [];
  try {
    links = JSON.parse(ipJson) as IpLink[];
  } catch {
    return out;
  }
  for (const link of links) {
    if (!link.ifname) continue;
    const infos = link.addr_info ?? [];
    const v4 = infos.find((a) => a.family === 'inet' && a.local)?.local ?? null;
    const v6info = infos.find((a) => a.family === 'inet6' && a.local);
    const v6 = v6info?.local ? (v6info.scope === 'link' ? `${v6info.local}%${link.ifname}` : v6info.local) : null;
    out.set(link.ifname, { v4, v6 });
  }
  return out;
}

const PCI_ADDRESS = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]$/;

async function details(host: Host, name: string, mac: string, addrs: { v4: string | null; v6: string | null } | undefined, biosdevname: boolean): Promise<InventoryInterface> {
  const base = `/sys/class/net/${name}`;
  const [carrier, vendor, product, speed, device, driver] = await Promise.all([
    host.readTextOrNull(`${base}/carrier`),
    host.readTextOrNull(`${base}/device/vendor`),
    host.readTextOrNull(`${base}/device/device`),
    host.readTextOrNull(`${base}/speed`),
    host.readlinkOrNull(`${base}/device`),
    host.readlinkOrNull(`${base}/device/driver`),
  ]);
  const speedN = speed !== null && /^\d+$/.test(speed.trim()) ? Number(speed.trim()) : null;
  const pci = device ? posix.basename(device) : null;
  let bios: string | null = null;
  if (biosdevname) {
    const res = await host.run('biosdevname', ['-i', name], { allowFailure: true, timeoutMs: 5000 });
    bios = res.exitCode === 0 && res.stdout.trim() ? res.stdout.trim() : null;
  }
  return {
    name,
    mac_address: mac,
    ipv4_address: addrs?.v4 ?? null,
    ipv6_address: addrs?.v6 ?? null,
    has_carrier: carrier?.trim() === '1',
    lldp: null,
    vendor: vendor?.trim() || null,
    product: product?.trim() || null,
    client_id: null,
    biosdevname: bios,
    speed_mbps: speedN,
    pci_address: pci && PCI_ADDRESS.test(pci) ? pci : null,
    driver: driver ? posix.basename(driver) : null,
  };
}

export async function collectInterfaces(host: Host, only: readonly string[] | null): Promise<InventoryInterface[]> {
  const [nics, ip, hasBiosdevname] = await Promise.all([
    listInterfaces(host, only),
    host.run('ip', ['-j', 'addr', 'show'], { allowFailure: true, timeoutMs: 10_000 }),
    host.hasCommand('biosdevname'),
  ]);
  const addrs = addressesByInterface(ip.exitCode === 0 ? ip.stdout : '[]');
  return Promise.all(nics.map((n) => details(host, n.name, n.macAddress, addrs.get(n.name), hasBiosdevname)));
}
