// The callback URL Ironic uses to reach us: <proto>://<host>:<port>, where host is the configured
// advertise address, else the IPv4 of ipa-network-interface, else the source address of the route
// toward the Ironic API host (`ip route get`), retried while the network comes up.
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Host } from './host/host.js';
import type { Logger } from './log.js';

export class AdvertiseAddressError extends Error {
  constructor(details: string) {
    super(`Error finding IP for Ironic Agent: ${details}`);
    this.name = 'LookupAgentIPError';
  }
}

export function formatCallbackUrl(protocol: 'http' | 'https', host: string, port: number): string {
  const h = isIP(host) === 6 ? `[${host}]` : host;
  return `${protocol}://${h}:${port}`;
}

function isLinkLocal(ip: string): boolean {
  return ip.startsWith('169.254.') || ip.toLowerCase().startsWith('fe80:');
}

/** Source address the kernel would use toward `destination`, or null. */
export async function routeSource(host: Host, destination: string): Promise<string | null> {
  const res = await host.run('ip', ['-j', 'route', 'get', destination], { allowFailure: true, timeoutMs: 10_000 });
  if (res.exitCode !== 0) return null;
  try {
    const routes = JSON.parse(res.stdout) as Array<{ prefsrc?: string }>;
    const src = routes[0]?.prefsrc;
    return src && !isLinkLocal(src) ? src : null;
  } catch {
    return null;
  }
}

export async function interfaceIpv4(host: Host, ifname: string): Promise<string | null> {
  const res = await host.run('ip', ['-j', '-4', 'addr', 'show', 'dev', ifname], { allowFailure: true, timeoutMs: 10_000 });
  if (res.exitCode !== 0) return null;
  try {
    const links = JSON.parse(res.stdout) as Array<{ addr_info?: Array<{ family?: string; local?: string }> }>;
    return links[0]?.addr_info?.find((a) => a.family === 'inet' && a.local)?.local ?? null;
  } catch {
    return null;
  }
}

export interface AdvertiseOptions {
  host: Host;
  log: Logger;
  advertiseHost: string | null;
  networkInterface: string | null;
  apiUrl: string | null;
  attempts: number;
  sleepSec: number;
  signal?: AbortSignal;
}

export async function detectAdvertiseHost(o: AdvertiseOptions): Promise<string> {
  if (o.advertiseHost) return o.advertiseHost;
  if (!o.networkInterface && !o.apiUrl) throw new AdvertiseAddressError('no advertise host, network interface or API URL configured');
  const attempts = Math.max(1, o.attempts);
  for (let i = 1; i <= attempts; i++) {
    let found: string | null = null;
    if (o.networkInterface) {
      found = await interfaceIpv4(o.host, o.networkInterface);
    } else if (o.apiUrl) {
      const apiHost = new URL(o.apiUrl).hostname.replace(/^\[|\]$/g, '');
      let ip: string | null = isIP(apiHost) ? apiHost : null;
      if (!ip) ip = await dnsLookup(apiHost).then((r) => r.address, () => null);
      if (ip) found = await routeSource(o.host, ip);
    }
    if (found) {
      o.log.info({ advertise_host: found }, 'advertise address detected');
      return found;
    }
    if (i < attempts) {
      o.log.warn({ attempt: i, of: attempts }, `no route/address found yet; retrying in ${o.sleepSec} s`);
      await sleep(o.sleepSec * 1000, undefined, { signal: o.signal });
    }
  }
  throw new AdvertiseAddressError(
    o.networkInterface ? `interface ${o.networkInterface} has no IPv4 address` : `no route toward ${o.apiUrl}`,
  );
}
