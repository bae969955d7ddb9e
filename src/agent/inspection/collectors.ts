// Inspection collectors, named as IPA's (ipa-inspection-collectors): each adds keys to the data
// posted to the inspection callback. A failing or unknown collector never stops the others; its
// error is reported in data.error as IPA does.
import type { Inventory } from '../../protocol/inventory.js';
import type { Services } from '../services.js';
import { guessRootDisk } from '../hardware/install-device.js';
import { collectSystemLogs } from '../system-logs.js';
import { collectPciDevices } from './pci-devices.js';
import { collectNumaTopology } from './numa-topology.js';
import { collectDmi } from './dmi-decode.js';
import type { LldpListener } from './lldp.js';

export type InspectionData = Record<string, unknown>;

export interface CollectorContext {
  services: Services;
  lldp: LldpListener | null;
}

type Collector = (data: InspectionData, ctx: CollectorContext) => Promise<void>;

export const COLLECTORS: Record<string, Collector> = {
  async default(data, { services: s }) {
    // With ipa-collect-lldp the inventory itself waits for and fills interfaces[].lldp.
    const inventory: Inventory = await s.inventory.collect();
    data['inventory'] = inventory;
    const root = guessRootDisk(inventory.disks);
    if (root) data['root_disk'] = root;
    data['boot_interface'] = s.config.bootif;
    data['configuration'] = {
      collectors: s.config.inspectionCollectors,
      managers: Object.entries(s.managers.versions()).map(([name, version]) => ({ name, version })),
    };
  },
  async logs(data, { services: s }) {
    data['logs'] = (await collectSystemLogs(s.host, s.logRing, s.host.deviceAllowList !== null)).toString('base64');
  },
  async 'pci-devices'(data, { services: s }) {
    data['pci_devices'] = await collectPciDevices(s.host);
  },
  async 'numa-topology'(data, { services: s }) {
    const numa = await collectNumaTopology(s.host);
    if (!numa) throw new Error('no NUMA information in /sys/devices/system/node');
    data['numa_topology'] = numa;
  },
  async 'dmi-decode'(data, { services: s }) {
    data['dmi'] = await collectDmi(s.host);
  },
  async lldp(data, { lldp }) {
    if (!lldp) throw new Error('LLDP listening is not running');
    data['lldp_raw'] = await lldp.all();
  },
};

/** Runs the named collectors in order; returns the data with `error` null or IPA's error summary. */
export async function runCollectors(names: readonly string[], ctx: CollectorContext): Promise<InspectionData> {
  const data: InspectionData = {};
  const failures: string[] = [];
  for (const name of names) {
    const collector = COLLECTORS[name];
    if (!collector) {
      failures.push(`Unknown inspection collector: ${name}`);
      continue;
    }
    try {
      await collector(data, ctx);
    } catch (err) {
      ctx.services.log.warn({ collector: name, err: (err as Error).message }, 'inspection collector failed');
      failures.push(`collector ${name} failed: ${(err as Error).message}`);
    }
  }
  data['error'] = failures.length ? `The following errors were encountered:\n${failures.map((f) => `* ${f}`).join('\n')}` : null;
  return data;
}
