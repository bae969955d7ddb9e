// memory: total from /proc/meminfo (bytes, as psutil reports), physical_mb as the sum of the
// installed memory devices in the SMBIOS table (IPA reads the same DIMM sizes through lshw).
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

export async function collectMemory(host: Host, smbios: SmbiosStructure[] | null): Promise<InventoryMemory> {
  const meminfo = (await host.readTextOrNull('/proc/meminfo')) ?? '';
  const m = /^MemTotal:\s+(\d+)\s*kB/m.exec(meminfo);
  return { total: m ? Number(m[1]) * 1024 : 0, physical_mb: physicalMiB(smbios) };
}
