// bmc_address / bmc_v6address / bmc_mac via ipmitool, as IPA. Only tried when the kernel has an
// IPMI device: on a host without a BMC ipmitool would only fail (slowly), and inventory must not stall.
import type { Host } from '../../host/host.js';

export interface BmcInfo {
  bmc_address: string | null;
  bmc_v6address: string | null;
  bmc_mac?: string;
}

const IPMI_DEVICES = ['/dev/ipmi0', '/dev/ipmi/0', '/dev/ipmidev/0'];
const CHANNELS = Array.from({ length: 11 }, (_, i) => i + 1);
const TIMEOUT_MS = 5000;

function field(text: string, name: string): string | null {
  const m = new RegExp(`^${name}\\s*:\\s*(.+)$`, 'm').exec(text);
  return m ? m[1]!.trim() : null;
}

export async function hasIpmiDevice(host: Host): Promise<boolean> {
  for (const d of IPMI_DEVICES) if (await host.exists(d)) return true;
  return false;
}

const modulesLoaded = new WeakSet<Host>();

/**
 * IPA loads ipmi_msghandler, ipmi_devintf and ipmi_si before it asks ipmitool: udev rarely loads
 * them (ipmi_devintf, which makes /dev/ipmi0, never), so without this a real BMC went unseen and
 * ironic-inspector could not find a node by its BMC address. Not on a shared host (--devices).
 */
async function loadIpmiModules(host: Host): Promise<void> {
  if (modulesLoaded.has(host) || host.deviceAllowList !== null) return;
  modulesLoaded.add(host);
  for (const mod of ['ipmi_msghandler', 'ipmi_devintf', 'ipmi_si']) {
    await host.run('modprobe', [mod], { allowFailure: true, timeoutMs: TIMEOUT_MS });
  }
}

export async function collectBmc(host: Host): Promise<BmcInfo> {
  await loadIpmiModules(host);
  if (!(await hasIpmiDevice(host)) || !(await host.hasCommand('ipmitool'))) return { bmc_address: null, bmc_v6address: null };
  let address: string | null = null;
  let mac: string | undefined;
  let anyAnswer = false;
  let channel: number | null = null;
  for (const ch of CHANNELS) {
    const res = await host.run('ipmitool', ['lan', 'print', String(ch)], { allowFailure: true, timeoutMs: TIMEOUT_MS });
    if (res.exitCode !== 0) continue;
    anyAnswer = true;
    const ip = field(res.stdout, 'IP Address');
    const m = field(res.stdout, 'MAC Address')?.toLowerCase();
    if (ip && ip !== '0.0.0.0') {
      address = ip;
      channel = ch;
      if (m && m !== '00:00:00:00:00:00') mac = m;
      break;
    }
  }
  if (!anyAnswer) return { bmc_address: null, bmc_v6address: null };
  // IPA: the first configured IPv6 address, "::/0" when there is none, null when ipmitool fails.
  const v6res = await host.run('ipmitool', ['lan6', 'print', String(channel ?? 1)], { allowFailure: true, timeoutMs: TIMEOUT_MS });
  let v6: string | null = null;
  if (v6res.exitCode === 0) {
    const found = [...v6res.stdout.matchAll(/Address:\s*([0-9a-fA-F:]+)\/\d+/g)].map((x) => x[1]!).find((a) => a !== '::');
    v6 = found ?? '::/0';
  }
  return { bmc_address: address ?? '0.0.0.0', bmc_v6address: v6, ...(mac ? { bmc_mac: mac } : {}) };
}
