// numa-topology collector: memory per node, CPU cores with their thread siblings, NICs per node,
// in IPA's shape. Machines without NUMA information get no key (IPA logs and skips it too).
import type { Host } from '../host/host.js';
import { countCpuList } from '../hardware/inventory/cpu.js';

export interface NumaTopology {
  ram: Array<{ numa_node: number; size_kb: number }>;
  cpus: Array<{ cpu: number; numa_node: number; thread_siblings: number[] }>;
  nics: Array<{ name: string; numa_node: number }>;
}

/** Expands "0-3,8" into [0,1,2,3,8]. */
export function expandCpuList(list: string): number[] {
  const out: number[] = [];
  for (const part of list.trim().split(',')) {
    if (!part) continue;
    const [a, b] = part.split('-').map(Number);
    if (a === undefined || Number.isNaN(a)) continue;
    for (let i = a; i <= (b === undefined || Number.isNaN(b) ? a : b); i++) out.push(i);
  }
  return out;
}

export async function collectNumaTopology(host: Host): Promise<NumaTopology | null> {
  const nodeDir = '/sys/devices/system/node';
  const nodes = (await host.readdir(nodeDir)).filter((n) => /^node\d+$/.test(n));
  if (nodes.length === 0) return null;
  const ram: NumaTopology['ram'] = [];
  const cpus: NumaTopology['cpus'] = [];
  for (const node of nodes) {
    const id = Number(node.slice(4));
    const meminfo = (await host.readTextOrNull(`${nodeDir}/${node}/meminfo`)) ?? '';
    const m = /MemTotal:\s+(\d+)\s*kB/.exec(meminfo);
    if (m) ram.push({ numa_node: id, size_kb: Number(m[1]) });
    const cpulist = (await host.readTextOrNull(`${nodeDir}/${node}/cpulist`)) ?? '';
    if (countCpuList(cpulist) === 0) continue;
    const byCore = new Map<number, Set<number>>();
    for (const cpu of expandCpuList(cpulist)) {
      const core = (await host.readTextOrNull(`/sys/devices/system/cpu/cpu${cpu}/topology/core_id`))?.trim();
      const siblings = (await host.readTextOrNull(`/sys/devices/system/cpu/cpu${cpu}/topology/thread_siblings_list`)) ?? String(cpu);
      const coreId = core !== undefined && /^\d+$/.test(core) ? Number(core) : cpu;
      const set = byCore.get(coreId) ?? new Set<number>();
      for (const t of expandCpuList(siblings)) set.add(t);
      byCore.set(coreId, set);
    }
    for (const [core, threads] of [...byCore].sort((a, b) => a[0] - b[0])) {
      cpus.push({ cpu: core, numa_node: id, thread_siblings: [...threads].sort((a, b) => a - b) });
    }
  }
  const nics: NumaTopology['nics'] = [];
  for (const name of await host.readdir('/sys/class/net')) {
    const v = (await host.readTextOrNull(`/sys/class/net/${name}/device/numa_node`))?.trim();
    if (v !== undefined && /^\d+$/.test(v)) nics.push({ name, numa_node: Number(v) });
  }
  return { ram, cpus, nics };
}
