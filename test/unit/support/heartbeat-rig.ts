// A Heartbeater wired to a real IronicClient and a FakeIronic, for the heartbeat tests.
import { Heartbeater, type HeartbeaterOptions } from '../../../src/agent/heartbeat.js';
import { IronicClient } from '../../../src/agent/ironic-client.js';
import { silentLogger } from '../../../src/agent/log.js';
import { FakeIronic, NODE_UUID, TOKEN, ironicRoot, startFakeIronic, type Handler, type Reply } from './fake-ironic.js';

export const CALLBACK = 'https://10.0.0.15:9999';
export const CA = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
export const HB_PATH = `/v1/heartbeat/${NODE_UUID}`;
export const ACCEPTED: Reply = { status: 202 };

export interface Rig {
  ironic: FakeIronic;
  client: IronicClient;
  hb: Heartbeater;
  beats(): FakeIronic['requests'];
  close(): Promise<void>;
}

export async function rig(opts: {
  version?: string;
  handler?: Handler;
  hb?: Partial<HeartbeaterOptions>;
  body?: HeartbeaterOptions['body'];
}): Promise<Rig> {
  const handler = opts.handler ?? (() => ACCEPTED);
  const ironic = await startFakeIronic((req) => (req.path === '/' ? ironicRoot(opts.version ?? '1.82') : handler(req)));
  const client = new IronicClient({ apiUrls: [ironic.url], insecure: false, globalRequestId: 'req-hb', forcedVersion: null });
  const hb = new Heartbeater({
    client,
    nodeUuid: NODE_UUID,
    heartbeatTimeout: 300,
    log: silentLogger(),
    body:
      opts.body ??
      (async () => ({ callback_url: CALLBACK, agent_token: TOKEN, agent_version: '9.4.3', agent_verify_ca: CA })),
    ...opts.hb,
  });
  return {
    ironic,
    client,
    hb,
    beats: () => ironic.to(HB_PATH),
    async close() {
      await hb.stop();
      await client.close();
      await ironic.close();
    },
  };
}

export const gaps = (reqs: Array<{ at: number }>) => reqs.slice(1).map((r, i) => r.at - reqs[i]!.at);
