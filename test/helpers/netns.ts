// A throw-away network namespace joined to the host by a veth pair, so that a service started
// inside it (Ironic) and a process outside it (the agent) talk over a real link:
//
//   host namespace                       namespace ferrum-<id>
//   <hostIf> 52:54:00:… 10.A.B.1/24 <--> <nsIf> 10.A.B.2/24 (+ lo up)
//
// The agent's NIC is the host end; its MAC is random and locally administered. Everything is
// removed by destroy(), and by an exit hook if the test process dies before it gets the chance.
import { execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { sh } from './loop-device.js';

export interface NetNamespace {
  /** Namespace name, e.g. ferrum-3fa2c1. */
  name: string;
  /** Host end of the veth pair: the agent's NIC. */
  hostIf: string;
  /** Namespace end of the veth pair. */
  nsIf: string;
  /** MAC of hostIf (lowercase, colon form). */
  hostMac: string;
  /** 10.A.B.1: address of hostIf. */
  hostAddr: string;
  /** 10.A.B.2: address of nsIf, where services inside the namespace bind. */
  nsAddr: string;
  /** `ip netns exec <name>`: prefix a command with it to run it inside. */
  execPrefix: string[];
  destroy(): Promise<void>;
}

async function ip(args: string[]): Promise<string> {
  const res = await sh('ip', args);
  if (res.code !== 0) throw new Error(`ip ${args.join(' ')} failed: ${res.stderr.trim() || res.stdout.trim()}`);
  return res.stdout;
}

function toInt(addr: string): number {
  return addr.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

/** Do the IPv4 prefixes a/alen and b/blen overlap? */
export function prefixesOverlap(a: string, alen: number, b: string, blen: number): boolean {
  const len = Math.min(alen, blen);
  if (len === 0) return true;
  const mask = len === 32 ? 0xffffffff : (0xffffffff << (32 - len)) >>> 0;
  return ((toInt(a) & mask) >>> 0) === ((toInt(b) & mask) >>> 0);
}

/**
 * IPv4 prefixes already routed or addressed on this host. Catch-all routes (default, VPN-style
 * /1s) do not count: the namespace's /24 is more specific and wins over them.
 */
async function usedPrefixes(): Promise<Array<[string, number]>> {
  const used: Array<[string, number]> = [];
  const routes = JSON.parse((await ip(['-j', '-4', 'route', 'show', 'table', 'all'])) || '[]') as Array<{ dst?: string }>;
  for (const r of routes) {
    if (!r.dst || r.dst === 'default') continue;
    const [addr, len] = r.dst.split('/');
    const prefix = len === undefined ? 32 : Number(len);
    if (addr && /^\d+\.\d+\.\d+\.\d+$/.test(addr) && prefix >= 8) used.push([addr, prefix]);
  }
  const links = JSON.parse((await ip(['-j', '-4', 'addr', 'show'])) || '[]') as Array<{ addr_info?: Array<{ local?: string; prefixlen?: number }> }>;
  for (const l of links) for (const a of l.addr_info ?? []) if (a.local) used.push([a.local, a.prefixlen ?? 32]);
  return used;
}

async function pickSubnet(): Promise<[number, number]> {
  const used = await usedPrefixes();
  for (let i = 0; i < 200; i++) {
    const a = randomInt(16, 250);
    const b = randomInt(1, 250);
    if (!used.some(([addr, len]) => prefixesOverlap(`10.${a}.${b}.0`, 24, addr, len))) return [a, b];
  }
  throw new Error('no free 10.x.y.0/24 subnet found for the test namespace');
}

function randomMac(): string {
  // 52:54:00 is the QEMU/KVM prefix: locally administered, unicast, never a real NIC.
  return ['52', '54', '00', ...[...randomBytes(3)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** Synchronous best-effort removal, for process exit (async work is impossible there). */
function removeSync(name: string, hostIf: string): void {
  for (const args of [['link', 'del', hostIf], ['netns', 'del', name]]) {
    try {
      execFileSync('ip', args, { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
}

export async function createNetNamespace(): Promise<NetNamespace> {
  if ((await sh('ip', ['-V'])).code !== 0) throw new Error('iproute2 (ip) is missing: run scripts/install-deps.sh');
  const id = randomBytes(3).toString('hex');
  const name = `ferrum-${id}`;
  const hostIf = `fa${id}`; // interface names are limited to 15 characters
  const nsIf = `fi${id}`;
  const [a, b] = await pickSubnet();
  const hostAddr = `10.${a}.${b}.1`;
  const nsAddr = `10.${a}.${b}.2`;
  const hostMac = randomMac();
  const onExit = () => removeSync(name, hostIf);
  process.once('exit', onExit);

  let destroyed = false;
  const ns: NetNamespace = {
    name,
    hostIf,
    nsIf,
    hostMac,
    hostAddr,
    nsAddr,
    execPrefix: ['ip', 'netns', 'exec', name],
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      process.removeListener('exit', onExit);
      // Deleting one end of a veth pair deletes both; the namespace goes once nothing runs in it.
      if ((await sh('ip', ['link', 'show', hostIf])).code === 0) await sh('ip', ['link', 'del', hostIf]);
      if ((await sh('ip', ['netns', 'pids', name])).code === 0) await sh('ip', ['netns', 'del', name]);
    },
  };
  try {
    await ip(['netns', 'add', name]);
    await ip(['-n', name, 'link', 'set', 'lo', 'up']);
    await ip(['link', 'add', hostIf, 'address', hostMac, 'type', 'veth', 'peer', 'name', nsIf, 'netns', name]);
    await ip(['addr', 'add', `${hostAddr}/24`, 'dev', hostIf]);
    await ip(['link', 'set', hostIf, 'up']);
    await ip(['-n', name, 'addr', 'add', `${nsAddr}/24`, 'dev', nsIf]);
    await ip(['-n', name, 'link', 'set', nsIf, 'up']);
    await waitForLink(name, nsIf);
  } catch (err) {
    await ns.destroy();
    throw err;
  }
  return ns;
}

/** veth links need a moment before they carry traffic (carrier up on both ends). */
async function waitForLink(name: string, nsIf: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const carrier = await sh('ip', ['netns', 'exec', name, 'cat', `/sys/class/net/${nsIf}/carrier`]);
    if (carrier.stdout.trim() === '1') return;
    if (Date.now() > deadline) throw new Error(`veth ${nsIf} in ${name} has no carrier after 10 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
