// The hardware inventory, IPA's schema field for field. Sources are read in parallel; nothing
// here waits on a slow tool without a time limit. What cannot change while the ramdisk runs
// (CPU, SMBIOS: DIMMs, vendor, firmware) is read once; the BMC is re-read at most every minute
// (ipmitool can take seconds on a real BMC); disks and NICs are read fresh every time.
import type { Inventory, InventoryCpu, InventoryMemory, InventorySystemVendor } from '../../../protocol/inventory.js';
import type { Host } from '../../host/host.js';
import { collectBmc, type BmcInfo } from './bmc.js';
import { collectCpu } from './cpu.js';
import { collectDisks } from './disks.js';
import { collectInterfaces } from './interfaces.js';
import { collectMemory, physicalMemoryMiB } from './memory.js';
import { parseSmbios, type SmbiosStructure } from './smbios.js';
import { collectBoot, collectHostname, collectSystemVendor } from './system.js';

/** The agent's passive LLDP listener, as the inventory sees it. */
export interface LldpSource {
  /** TLVs per interface ([type, hex] as IPA) once listening is over; [] where nothing was heard. */
  collect(names: readonly string[]): Promise<Record<string, Array<[number, string]>>>;
}

export interface InventoryOptions {
  bootif: string | null;
  interfaces: readonly string[] | null;
  /** How long a BMC reading stays valid (ms). */
  bmcTtlMs?: number;
  /**
   * With ipa-collect-lldp: where interfaces[].lldp comes from (null while listening could not
   * start). Without it every interface reports lldp: null, as IPA.
   */
  lldp?: () => Promise<LldpSource | null>;
}

export class InventoryCollector {
  private cpu: Promise<InventoryCpu> | null = null;
  private smbios: Promise<SmbiosStructure[] | null> | null = null;
  private vendor: Promise<InventorySystemVendor> | null = null;
  private physicalMb: Promise<number | null> | null = null;
  private bmc: { at: number; value: Promise<BmcInfo> } | null = null;

  constructor(
    private readonly host: Host,
    private readonly opts: InventoryOptions,
  ) {}

  private smbiosTable(): Promise<SmbiosStructure[] | null> {
    return (this.smbios ??= this.host.readBytesOrNull('/sys/firmware/dmi/tables/DMI').then((b) => (b ? parseSmbios(b) : null)));
  }

  private bmcInfo(): Promise<BmcInfo> {
    const ttl = this.opts.bmcTtlMs ?? 60_000;
    if (!this.bmc || Date.now() - this.bmc.at > ttl) this.bmc = { at: Date.now(), value: collectBmc(this.host) };
    return this.bmc.value;
  }

  private cpuInfo(): Promise<InventoryCpu> {
    // A failed read is retried next time rather than cached.
    return (this.cpu ??= collectCpu(this.host).catch((e: unknown) => {
      this.cpu = null;
      throw e;
    }));
  }

  /**
   * Reads what never changes (CPU, SMBIOS, installed memory) in the background right after start,
   * so that the first inventory — inspection, lookup or the conductor's — does not pay for it.
   */
  prewarm(): void {
    const quiet = () => undefined;
    this.cpuInfo().catch(quiet);
    this.smbiosTable()
      .then((t) => {
        this.vendor ??= collectSystemVendor(this.host, t);
        this.physicalMb ??= physicalMemoryMiB(this.host, t);
      })
      .catch(quiet);
  }

  async collect(): Promise<Inventory> {
    const host = this.host;
    const [cpuInfo, memory, disks, interfaces, systemVendor, boot, hostname, bmc] = await Promise.all([
      this.cpuInfo(),
      this.smbiosTable().then((t): Promise<InventoryMemory> => collectMemory(host, t, (this.physicalMb ??= physicalMemoryMiB(host, t)))),
      collectDisks(host),
      collectInterfaces(host, this.opts.interfaces),
      (this.vendor ??= this.smbiosTable().then((t) => collectSystemVendor(host, t))),
      collectBoot(host, this.opts.bootif),
      collectHostname(host),
      this.bmcInfo(),
    ]);
    if (this.opts.lldp) {
      // IPA fills interfaces[].lldp only with ipa-collect-lldp, waiting for the frames (bounded by
      // the LLDP timeout); this used to be left null, so get_hardware_info never reported LLDP.
      const source = await this.opts.lldp();
      if (source) {
        const heard = await source.collect(interfaces.map((i) => i.name));
        for (const iface of interfaces) iface.lldp = heard[iface.name] ?? [];
      }
    }
    return {
      interfaces,
      cpu: structuredClone(cpuInfo),
      disks,
      memory,
      bmc_address: bmc.bmc_address,
      bmc_v6address: bmc.bmc_v6address,
      ...(bmc.bmc_mac ? { bmc_mac: bmc.bmc_mac } : {}),
      system_vendor: structuredClone(systemVendor),
      boot,
      hostname,
    };
  }
}

/** One-off collection (inspection, tests). */
export function collectInventory(host: Host, opts: InventoryOptions): Promise<Inventory> {
  return new InventoryCollector(host, opts).collect();
}
