// pci-devices collector: every PCI function with its IDs, as IPA (hex without 0x; bus = sysfs name).
import type { Host } from '../host/host.js';

export interface PciDevice {
  vendor_id: string | null;
  product_id: string | null;
  class: string | null;
  revision: string | null;
  bus: string;
  numa_node_id: number | null;
}

const hex = (v: string | null) => (v === null ? null : v.trim().replace(/^0x/i, ''));

export async function collectPciDevices(host: Host): Promise<PciDevice[]> {
  const base = '/sys/bus/pci/devices';
  const names = await host.readdir(base);
  return Promise.all(
    names.map(async (bus) => {
      const read = (f: string) => host.readTextOrNull(`${base}/${bus}/${f}`);
      const [vendor, device, cls, rev, numa] = await Promise.all([read('vendor'), read('device'), read('class'), read('revision'), read('numa_node')]);
      const n = numa !== null && /^-?\d+$/.test(numa.trim()) ? Number(numa.trim()) : null;
      return { vendor_id: hex(vendor), product_id: hex(device), class: hex(cls), revision: hex(rev), bus, numa_node_id: n !== null && n >= 0 ? n : null };
    }),
  );
}
