// Lookup: ask Ironic which node we are, by our MAC addresses, until it knows or lookup_timeout passes.
// Back-off as IPA: uniform in [interval, min(max, max(interval, 2^(n-1)))], plus 5/10/30 s after a 409.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from './log.js';
import { IronicConnectionError, IronicHttpError, type IronicClient, type LookupResult } from './ironic-client.js';

/** Seconds to wait before attempt `attempt + 1` (attempt counts from 1). */
export function lookupBackoff(attempt: number, interval: number, maxInterval: number, random: () => number = Math.random): number {
  const upper = Math.min(maxInterval, Math.max(interval, 2 ** (attempt - 1)));
  return interval + random() * Math.max(0, upper - interval);
}

/** Extra seconds after the n-th consecutive 409 (node locked by the conductor). */
export function conflictDelay(conflicts: number): number {
  return conflicts <= 1 ? 5 : conflicts === 2 ? 10 : 30;
}

export class LookupTimeoutError extends Error {
  constructor(seconds: number, last: string) {
    super(`Error getting configuration from Ironic: lookup did not succeed within ${seconds} s (last error: ${last})`);
    this.name = 'LookupNodeError';
  }
}

export interface LookupOptions {
  client: IronicClient;
  /** Fresh MAC list for each attempt (NICs may appear late). */
  macs: () => Promise<string[]>;
  nodeUuid: string | null;
  /** 0 = retry forever. */
  timeoutSec: number;
  interval: number;
  maxInterval: number;
  log: Logger;
  signal?: AbortSignal;
  random?: () => number;
  /** Clock and sleep, for tests (defaults: Date.now and a timer honouring `signal`). */
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

const defaultSleep = (ms: number, signal?: AbortSignal): Promise<void> => sleep(ms, undefined, { signal });

export async function lookupNode(o: LookupOptions): Promise<LookupResult> {
  const now = o.now ?? Date.now;
  const started = now();
  let attempt = 0;
  let conflicts = 0;
  let lastError = 'none';
  for (;;) {
    o.signal?.throwIfAborted();
    attempt++;
    const macs = await o.macs();
    let extraDelay = 0;
    if (macs.length === 0) {
      lastError = 'no network interface with a MAC address';
      o.log.warn('lookup: no usable network interface found yet');
    } else {
      try {
        const res = await o.client.lookup(macs, o.nodeUuid);
        o.log.info({ node: res.node.uuid, attempt, macs }, 'lookup succeeded');
        return res;
      } catch (err) {
        lastError = (err as Error).message;
        if (err instanceof IronicHttpError && err.status === 404) {
          conflicts = 0;
          o.log.warn(
            { macs, node_uuid: o.nodeUuid, attempt },
            `lookup: Ironic has no node with MAC(s) ${macs.join(', ')} in a state that allows lookup (404: ${err.faultstring}); retrying`,
          );
        } else if (err instanceof IronicHttpError && err.status === 409) {
          conflicts++;
          extraDelay = conflictDelay(conflicts);
          o.log.warn({ attempt, delay: extraDelay }, `lookup: node is locked by the conductor (409): ${err.faultstring}`);
        } else if (err instanceof IronicConnectionError) {
          o.client.forgetVersion();
          o.log.warn({ attempt }, `lookup: ${err.message}; retrying`);
        } else {
          o.log.warn({ attempt, err: lastError }, 'lookup failed; retrying');
        }
      }
    }
    const delay = lookupBackoff(attempt, o.interval, o.maxInterval, o.random) + extraDelay;
    const elapsed = (now() - started) / 1000;
    if (o.timeoutSec > 0 && elapsed + delay > o.timeoutSec) throw new LookupTimeoutError(o.timeoutSec, lastError);
    await (o.sleep ?? defaultSleep)(delay * 1000, o.signal);
  }
}
