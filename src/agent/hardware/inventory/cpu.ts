// cpu: read from /proc/cpuinfo and /sys/devices/system/cpu, the sources lscpu itself reads,
// without spawning it. Values are formatted as IPA reports them from lscpu.
import { machine } from 'node:os';
import type { InventoryCpu } from '../../../protocol/inventory.js';
import type { Host } from '../../host/host.js';

/** Counts CPUs in a sysfs list such as "0-3,8,10-11". */
export function countCpuList(list: string): number {
  let n = 0;
  for (const part of list.trim().split(',')) {
    if (part === '') continue;
    const [a, b] = part.split('-').map(Number);
    if (a === undefined || Number.isNaN(a)) continue;
    n += b === undefined || Number.isNaN(b) ? 1 : b - a + 1;
  }
  return n;
}

function cpuinfoField(cpuinfo: string, key: string): string | null {
  const re = new RegExp(`^${key}\\s*:\\s*(.*)$`, 'm');
  const m = re.exec(cpuinfo);
  return m ? m[1]!.trim() : null;
}

export async function collectCpu(host: Host): Promise<InventoryCpu> {
  const [cpuinfo, present, maxFreq] = await Promise.all([
    host.readTextOrNull('/proc/cpuinfo'),
    host.readTextOrNull('/sys/devices/system/cpu/present'),
    host.readTextOrNull('/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq'),
  ]);
  const info = cpuinfo ?? '';
  // lscpu: "CPU max MHz" from cpufreq (kHz), else the "cpu MHz" of /proc/cpuinfo; 4 decimals.
  let frequency: string | null = null;
  if (maxFreq && /^\d+$/.test(maxFreq.trim())) frequency = (Number(maxFreq.trim()) / 1000).toFixed(4);
  else {
    const mhz = cpuinfoField(info, 'cpu MHz');
    if (mhz && !Number.isNaN(Number(mhz))) frequency = Number(mhz).toFixed(4);
  }
  const count = present ? countCpuList(present) : (info.match(/^processor\s*:/gm)?.length ?? 0);
  const packages = new Set<string>();
  for (const cpu of await host.readdir('/sys/devices/system/cpu')) {
    if (!/^cpu\d+$/.test(cpu)) continue;
    const id = await host.readTextOrNull(`/sys/devices/system/cpu/${cpu}/topology/physical_package_id`);
    if (id !== null) packages.add(id.trim());
  }
  const flags = (cpuinfoField(info, 'flags') ?? cpuinfoField(info, 'Features') ?? '').split(/\s+/).filter(Boolean);
  return {
    model_name: cpuinfoField(info, 'model name') ?? cpuinfoField(info, 'Model') ?? null,
    frequency,
    count,
    architecture: (await host.readTextOrNull('/proc/sys/kernel/arch'))?.trim() || machine(),
    flags,
    socket_count: packages.size > 0 ? packages.size : null,
  };
}
