// The hardware inventory, IPA's schema field for field. Sources are read in parallel; nothing
// here waits on a slow tool without a time limit.
import type { Inventory } from '../../../protocol/inventory.js';
import type { Host } from '../../host/host.js';
import { collectBmc } from './bmc.js';
import { collectCpu } from './cpu.js';
import { collectDisks } from './disks.js';
import { collectInterfaces } from './interfaces.js';
import { collectMemory } from './memory.js';
import { parseSmbios } from './smbios.js';
import { collectBoot, collectHostname, collectSystemVendor } from './system.js';

export interface InventoryOptions {
  bootif: string | null;
  interfaces: readonly string[] | null;
}

export async function collectInventory(host: Host, opts: InventoryOptions): Promise<Inventory> {
  const smbiosPromise = host.readBytesOrNull('/sys/firmware/dmi/tables/DMI').then((b) => (b ? parseSmbios(b) : null));
  const [cpu, memory, disks, interfaces, systemVendor, boot, hostname, bmc] = await Promise.all([
    collectCpu(host),
    smbiosPromise.then((t) => collectMemory(host, t)),
    collectDisks(host),
    collectInterfaces(host, opts.interfaces),
    smbiosPromise.then((t) => collectSystemVendor(host, t)),
    collectBoot(host, opts.bootif),
    collectHostname(host),
    collectBmc(host),
  ]);
  return {
    interfaces,
    cpu,
    disks,
    memory,
    bmc_address: bmc.bmc_address,
    bmc_v6address: bmc.bmc_v6address,
    ...(bmc.bmc_mac ? { bmc_mac: bmc.bmc_mac } : {}),
    system_vendor: systemVendor,
    boot,
    hostname,
  };
}
