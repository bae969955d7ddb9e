// memory: total from /proc/meminfo (bytes, as psutil reports), physical_mb as the sum of the
// installed memory devices in the SMBIOS table (IPA reads the same DIMM sizes through lshw); on
// machines without SMBIOS memory devices (many VMs), the online memory blocks the kernel knows,
// which is lshw's fallback too.
import type { InventoryMemory } from '../../../protocol/inventory.js';
import type { Host } from '../../host/host.js';
import { memoryDeviceMiB, type SmbiosStructure } from './smbios.js';

export function physicalMiB(structures: SmbiosStructure[] | null): number | null {
  if (!structures) return null;
  let total = 0;
  let any = false;
  for (const s of structures) {
    if (s.type !== 17) continue;
    const mib = memoryDeviceMiB(s);
    if (mib === null) continue;
    total += mib;
    any = true;
  }
  return any && total > 0 ? Math.round(total) : null;
}

/** MiB of online memory blocks in /sys/devices/system/memory, or null. */
export async function onlineBlocksMiB(host: Host): Promise<number | null> {
  const base = '/sys/devices/system/memory';
  const sizeHex = (await host.readTextOrNull(`${base}/block_size_bytes`))?.trim();
  if (!sizeHex || !/^[0-9a-fA-F]+$/.test(sizeHex)) return null;
  const blockBytes = parseInt(sizeHex, 16);
  const blocks = (await host.readdir(base)).filter((n) => /^memory\d+$/.test(n));
  const online = await Promise.all(blocks.map((b) => host.readTextOrNull(`${base}/${b}/online`)));
  const count = online.filter((v) => v?.trim() === '1').length;
  return count > 0 ? Math.round((count * blockBytes) / 2 ** 20) : null;
}

/** Installed memory in MiB: DIMMs from SMBIOS, else online memory blocks. */
export async function physicalMemoryMiB(host: Host, smbios: SmbiosStructure[] | null): Promise<number | null> {
  return physicalMiB(smbios) ?? (await onlineBlocksMiB(host));
}

export async function collectMemory(host: Host, smbios: SmbiosStructure[] | null, physical?: Promise<number | null>): Promise<InventoryMemory> {
  const [meminfo, physicalMb] = await Promise.all([host.readTextOrNull('/proc/meminfo'), physical ?? physicalMemoryMiB(host, smbios)]);
  const m = /^MemTotal:\s+(\d+)\s*kB/m.exec(meminfo ?? '');
  return { total: m ? Number(m[1]) * 1024 : 0, physical_mb: physicalMb };
}
