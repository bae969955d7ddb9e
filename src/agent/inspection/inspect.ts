// In-band inspection (before lookup, when ipa-inspection-callback-url is set): wait for DHCP, run
// the collectors and POST the data to ironic-inspector's /v1/continue (or Ironic's
// /v1/continue_inspection). The node UUID in the answer is passed to lookup.
import { request } from 'undici';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Services } from '../services.js';
import { collectInterfaces } from '../hardware/inventory/interfaces.js';
import { normaliseMac } from '../hardware/network-interfaces.js';
import { runCollectors, type InspectionData } from './collectors.js';
import type { LldpListener } from './lldp.js';

export interface InspectionResult {
  nodeUuid: string | null;
  /** Newer Ironic (>= 1.84) answers with the lookup body, token included. */
  lookup: Record<string, unknown> | null;
}

/** Waits until the PXE NIC (or every NIC) has an IPv4 address, up to the timeout. */
export async function waitForDhcp(s: Services, timeoutSec: number, all: boolean): Promise<boolean> {
  if (timeoutSec <= 0) return true;
  const pxeMac = s.config.bootif ? normaliseMac(s.config.bootif) : null;
  const deadline = Date.now() + timeoutSec * 1000;
  for (;;) {
    const nics = await collectInterfaces(s.host, s.config.interfaces);
    const relevant = all || !pxeMac ? nics : nics.filter((n) => n.mac_address === pxeMac);
    const ready = all ? relevant.every((n) => n.ipv4_address) : relevant.some((n) => n.ipv4_address);
    if (relevant.length > 0 && ready) return true;
    if (Date.now() > deadline) {
      s.log.warn({ timeout: timeoutSec }, 'inspection: no DHCP address yet; collecting anyway');
      return false;
    }
    await sleep(1000);
  }
}

export async function postInspectionData(url: string, data: InspectionData, s: Services): Promise<InspectionResult> {
  const body = JSON.stringify(data);
  // Connection errors and 5xx are retried (5 attempts, 5 s apart); a 4xx is final.
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body,
        headersTimeout: 60_000,
        bodyTimeout: 60_000,
      });
      const text = await res.body.text();
      if (res.statusCode >= 500 && attempt < 5) throw new Error(`inspector answered ${res.statusCode}: ${text.slice(0, 300)}`);
      if (res.statusCode >= 400) {
        s.log.error({ status: res.statusCode, body: text.slice(0, 500) }, 'inspection data was rejected; continuing with lookup');
        return { nodeUuid: null, lookup: null };
      }
      let parsed: Record<string, unknown> = {};
      try {
        parsed = JSON.parse(text) as Record<string, unknown>;
      } catch {
        // 202 with an empty body (Ironic's continue_inspection below 1.84)
      }
      const node = parsed['node'] as Record<string, unknown> | undefined;
      const uuid = typeof parsed['uuid'] === 'string' ? parsed['uuid'] : typeof node?.['uuid'] === 'string' ? (node['uuid'] as string) : null;
      s.log.info({ node: uuid }, 'inspection data accepted');
      return { nodeUuid: uuid, lookup: node ? parsed : null };
    } catch (err) {
      if (attempt >= 5) {
        s.log.error({ err: (err as Error).message }, 'could not deliver inspection data; continuing with lookup');
        return { nodeUuid: null, lookup: null };
      }
      s.log.warn({ attempt, err: (err as Error).message }, 'inspection callback failed; retrying in 5 s');
      await sleep(5000);
    }
  }
}

export async function inspect(s: Services, lldp: LldpListener | null): Promise<InspectionResult> {
  const url = s.config.inspectionCallbackUrl;
  if (!url) return { nodeUuid: null, lookup: null };
  if (s.config.inspectionCollectors.includes('default')) {
    await waitForDhcp(s, s.config.inspectionDhcpWaitTimeout, false);
  }
  const started = Date.now();
  const data = await runCollectors(s.config.inspectionCollectors, { services: s, lldp });
  s.log.info({ collectors: s.config.inspectionCollectors, ms: Date.now() - started, error: data['error'] }, 'inspection data collected');
  return postInspectionData(url, data, s);
}
