import { afterEach, describe, expect, it } from 'vitest';
import { IronicClient } from '../../src/agent/ironic-client.js';
import { LookupTimeoutError, conflictDelay, lookupBackoff, lookupNode, type LookupOptions } from '../../src/agent/lookup.js';
import { silentLogger } from '../../src/agent/log.js';
import { captureLog } from './support/log-capture.js';
import {
  FakeIronic,
  NODE_UUID,
  TOKEN,
  ironicError,
  ironicRoot,
  lookupAnswer,
  startFakeIronic,
  unusedPort,
  type Handler,
} from './support/fake-ironic.js';

describe('lookupBackoff', () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8, 10, 20, 100, 2000])('attempt %i stays in [interval, min(max, max(interval, 2^(n-1)))]', (n) => {
    for (const [interval, max] of [
      [1, 60],
      [0.5, 60],
      [3, 60],
      [10, 10],
      [0.01, 0.05],
      [100, 60], // max below interval: never less than interval
    ] as const) {
      const upper = Math.min(max, Math.max(interval, 2 ** (n - 1)));
      const lo = lookupBackoff(n, interval, max, () => 0);
      const hi = lookupBackoff(n, interval, max, () => 0.999999);
      expect(lo).toBe(interval);
      expect(hi).toBeGreaterThanOrEqual(interval);
      expect(hi).toBeLessThanOrEqual(Math.max(interval, upper));
      expect(hi).toBeCloseTo(Math.max(interval, upper), 3);
      for (let i = 0; i < 20; i++) {
        const v = lookupBackoff(n, interval, max);
        expect(v).toBeGreaterThanOrEqual(interval);
        expect(v).toBeLessThanOrEqual(Math.max(interval, upper));
      }
    }
  });

  it('grows like IPA with the defaults (interval 1, max 60)', () => {
    const top = (n: number) => lookupBackoff(n, 1, 60, () => 1);
    expect([1, 2, 3, 4, 5, 6, 7, 8].map(top)).toEqual([1, 2, 4, 8, 16, 32, 60, 60]);
    expect(lookupBackoff(4, 1, 60, () => 0.5)).toBe(4.5);
  });
});

describe('conflictDelay', () => {
  it('is 5, then 10, then 30 s for every further 409', () => {
    expect([1, 2, 3, 4, 10].map(conflictDelay)).toEqual([5, 10, 30, 30, 30]);
  });
});

const MACS = ['52:54:00:12:34:56', '52:54:00:ab:cd:ef'];

describe('lookupNode against a local Ironic', () => {
  let ironic: FakeIronic | null = null;
  let client: IronicClient | null = null;
  afterEach(async () => {
    await client?.close();
    await ironic?.close();
    client = null;
    ironic = null;
  });

  async function setup(handler: Handler, version = '1.82'): Promise<IronicClient> {
    ironic = await startFakeIronic((req) => (req.path === '/' ? ironicRoot(version) : handler(req)));
    client = new IronicClient({ apiUrls: [ironic.url], insecure: false, globalRequestId: null, forcedVersion: null });
    return client;
  }

  const opts = (c: IronicClient, extra: Partial<LookupOptions> = {}): LookupOptions => ({
    client: c,
    macs: async () => MACS,
    nodeUuid: null,
    timeoutSec: 10,
    interval: 0.01,
    maxInterval: 0.02,
    log: silentLogger(),
    ...extra,
  });

  it('discovers the version with GET / and looks up with min(server, 1.62)', async () => {
    const c = await setup(() => lookupAnswer());
    const res = await lookupNode(opts(c));
    expect(res.node.uuid).toBe(NODE_UUID);
    expect(res.heartbeatTimeout).toBe(300);
    expect(res.config?.agent_token).toBe(TOKEN);
    const [root, lookup] = ironic!.requests;
    expect(root!.method).toBe('GET');
    expect(root!.path).toBe('/');
    expect(root!.headers['x-openstack-ironic-api-version']).toBeUndefined();
    expect(lookup!.path).toBe('/v1/lookup');
    expect(lookup!.headers['x-openstack-ironic-api-version']).toBe('1.62');
    expect(lookup!.headers['accept']).toBe('application/json');
    expect(lookup!.headers['content-type']).toBe('application/json');
    expect(lookup!.query.get('addresses')).toBe(MACS.join(','));
    expect(lookup!.query.has('node_uuid')).toBe(false);
  });

  it.each([
    ['1.46', '1.46'],
    ['1.62', '1.62'],
    ['1.61', '1.61'],
    ['1.22', '1.22'],
    ['1.100', '1.62'],
  ])('server %s → lookup header %s', async (server, expected) => {
    const c = await setup(() => lookupAnswer(), server);
    await lookupNode(opts(c));
    expect(ironic!.to('/v1/lookup')[0]!.headers['x-openstack-ironic-api-version']).toBe(expected);
  });

  it('discovers the version once, not on every attempt', async () => {
    let n = 0;
    const c = await setup(() => (++n < 3 ? ironicError(404, 'Node not found') : lookupAnswer()));
    await lookupNode(opts(c));
    expect(ironic!.to('/').length).toBe(1);
    expect(ironic!.to('/v1/lookup').length).toBe(3);
  });

  it('retries 404s until Ironic knows the node, logging the MACs it sent', async () => {
    let n = 0;
    const c = await setup(() =>
      ++n <= 3 ? ironicError(404, 'Node with port addresses 52:54:00:12:34:56 could not be found.') : lookupAnswer(),
    );
    const cap = captureLog();
    const res = await lookupNode(opts(c, { log: cap.log }));
    expect(res.node.uuid).toBe(NODE_UUID);
    expect(ironic!.to('/v1/lookup').length).toBe(4);
    const warnings = cap.lines().filter((l) => l.level === 40);
    expect(warnings.length).toBe(3);
    expect(warnings[0]!.msg).toContain(MACS.join(', '));
    expect(warnings[0]!.msg).toContain('404: Node with port addresses 52:54:00:12:34:56 could not be found.');
    const ok = cap.lines().find((l) => l.msg === 'lookup succeeded')!;
    expect(ok).toMatchObject({ node: NODE_UUID, attempt: 4, macs: MACS });
  });

  it('sends node_uuid when it has one', async () => {
    const c = await setup(() => lookupAnswer());
    await lookupNode(opts(c, { nodeUuid: NODE_UUID }));
    const q = ironic!.to('/v1/lookup')[0]!.query;
    expect(q.get('node_uuid')).toBe(NODE_UUID);
    expect(q.get('addresses')).toBe(MACS.join(','));
  });

  it('asks for a fresh MAC list every attempt and does not call Ironic without one', async () => {
    const c = await setup(() => lookupAnswer());
    let calls = 0;
    await lookupNode(opts(c, { macs: async () => (++calls < 3 ? [] : ['52:54:00:00:00:01']) }));
    expect(calls).toBe(3);
    expect(ironic!.to('/v1/lookup').map((r) => r.query.get('addresses'))).toEqual(['52:54:00:00:00:01']);
  });

  it('waits 5, 10, 30 s extra after consecutive 409s (node locked)', async () => {
    let n = 0;
    const replies = [409, 409, 409, 404, 409];
    const c = await setup(() => {
      const status = replies[n++];
      return status ? ironicError(status, 'Node is locked by host conductor-1') : lookupAnswer();
    });
    const sleeps: number[] = [];
    let clock = 0;
    await lookupNode(
      opts(c, {
        interval: 1,
        maxInterval: 60,
        timeoutSec: 0,
        random: () => 0,
        now: () => clock,
        sleep: async (ms) => {
          sleeps.push(ms);
          clock += ms;
        },
      }),
    );
    // interval + 5, + 10, + 30; the 404 resets the count; the next 409 is again + 5.
    expect(sleeps).toEqual([6000, 11000, 31000, 1000, 6000]);
  });

  it('waits for real between attempts', async () => {
    let n = 0;
    const c = await setup(() => (++n < 3 ? ironicError(404, 'not found') : lookupAnswer()));
    const started = Date.now();
    await lookupNode(opts(c, { interval: 0.05, maxInterval: 0.05 }));
    const lookups = ironic!.to('/v1/lookup');
    expect(lookups[1]!.at - lookups[0]!.at).toBeGreaterThanOrEqual(45);
    expect(lookups[2]!.at - lookups[1]!.at).toBeGreaterThanOrEqual(45);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('gives up with LookupTimeoutError (LookupNodeError) once lookup_timeout would pass', async () => {
    const c = await setup(() => ironicError(404, 'Node not found'));
    const started = Date.now();
    const err = await lookupNode(opts(c, { timeoutSec: 0.3, interval: 0.05, maxInterval: 0.1 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LookupTimeoutError);
    expect((err as Error).name).toBe('LookupNodeError');
    expect((err as Error).message).toMatch(/^Error getting configuration from Ironic: lookup did not succeed within 0.3 s/);
    expect((err as Error).message).toContain('Node not found');
    const elapsed = Date.now() - started;
    expect(elapsed).toBeLessThan(1500);
    expect(ironic!.to('/v1/lookup').length).toBeGreaterThanOrEqual(2);
  });

  it('never sleeps past the timeout (virtual clock: 1 + 2 + 4 s within 8 s, then stop)', async () => {
    const c = await setup(() => ironicError(404, 'Node not found'));
    const sleeps: number[] = [];
    let clock = 0;
    const err = await lookupNode(
      opts(c, {
        timeoutSec: 8,
        interval: 1,
        maxInterval: 60,
        random: () => 1,
        now: () => clock,
        sleep: async (ms) => {
          sleeps.push(ms);
          clock += ms;
        },
      }),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LookupTimeoutError);
    expect(sleeps).toEqual([1000, 2000, 4000]);
    expect(ironic!.to('/v1/lookup').length).toBe(4);
  });

  it('retries forever with timeout 0', async () => {
    let n = 0;
    const c = await setup(() => (++n < 6 ? ironicError(404, 'x') : lookupAnswer()));
    let clock = 0;
    const res = await lookupNode(
      opts(c, { timeoutSec: 0, interval: 100, maxInterval: 1000, now: () => clock, sleep: async (ms) => void (clock += ms) }),
    );
    expect(res.node.uuid).toBe(NODE_UUID);
    expect(clock).toBe(500_000); // 5 × interval: 2^(n-1) never exceeds 100 here
  });

  it('retries through connection refused until Ironic comes up', async () => {
    const port = await unusedPort();
    client = new IronicClient({ apiUrls: [`http://127.0.0.1:${port}`], insecure: false, globalRequestId: null, forcedVersion: null });
    let attempts = 0;
    const cap = captureLog();
    const res = await lookupNode(
      opts(client, {
        log: cap.log,
        macs: async () => {
          // Ironic starts before the third attempt.
          if (++attempts === 3) ironic = await startFakeIronic((req) => (req.path === '/' ? ironicRoot('1.82') : lookupAnswer()), port);
          return MACS;
        },
      }),
    );
    expect(res.node.uuid).toBe(NODE_UUID);
    expect(attempts).toBe(3);
    const refused = cap.lines().filter((l) => l.level === 40);
    expect(refused.length).toBe(2);
    expect(refused[0]!.msg).toMatch(/cannot reach http:\/\/127\.0\.0\.1:\d+\/: .*; retrying/);
    // The version is discovered once Ironic answers.
    expect(ironic!.requests.map((r) => r.path)).toEqual(['/', '/v1/lookup']);
    expect(ironic!.to('/v1/lookup')[0]!.headers['x-openstack-ironic-api-version']).toBe('1.62');
  });

  it('rediscovers the version after a connection error (Ironic may have been upgraded)', async () => {
    let first = true;
    ironic = await startFakeIronic(() => ironicRoot('1.82'));
    const port = ironic.port;
    const c = new IronicClient({ apiUrls: [ironic.url], insecure: false, globalRequestId: null, forcedVersion: null });
    client = c;
    let attempt = 0;
    ironic.setHandler((req) => {
      if (req.path === '/') return ironicRoot(first ? '1.82' : '1.46');
      return ironicError(404, 'not yet');
    });
    await lookupNode(
      opts(c, {
        macs: async () => {
          attempt++;
          if (attempt === 2) {
            // Ironic goes away and comes back older.
            await ironic!.close();
            first = false;
          }
          if (attempt === 3) ironic = await startFakeIronic((req) => (req.path === '/' ? ironicRoot('1.46') : lookupAnswer()), port);
          return MACS;
        },
      }),
    );
    expect(ironic.to('/')).toHaveLength(1);
    expect(ironic.to('/v1/lookup')[0]!.headers['x-openstack-ironic-api-version']).toBe('1.46');
  });

  it('retries answers it cannot use: not JSON, no node.uuid, no heartbeat_timeout, 5xx', async () => {
    const bad = [
      { status: 200, raw: '<html>proxy error</html>' },
      { status: 200, json: { node: {}, config: { heartbeat_timeout: 300 } } },
      { status: 200, json: { node: { uuid: NODE_UUID }, config: { agent_token: TOKEN } } },
      { status: 200, json: { node: { uuid: NODE_UUID } } },
      ironicError(503, 'No conductor'),
      { status: 200, json: [] },
    ];
    let n = 0;
    const c = await setup(() => bad[n++] ?? lookupAnswer());
    const cap = captureLog();
    const res = await lookupNode(opts(c, { log: cap.log }));
    expect(res.node.uuid).toBe(NODE_UUID);
    expect(ironic!.to('/v1/lookup')).toHaveLength(bad.length + 1);
    const errs = cap.lines().filter((l) => l.msg === 'lookup failed; retrying').map((l) => String(l['err']));
    expect(errs[0]).toBe('lookup answer is not JSON');
    expect(errs[1]).toMatch(/lookup answer is invalid: .*uuid/);
    expect(errs[2]).toMatch(/lookup answer is invalid: \/config .*heartbeat_timeout/);
    expect(errs[3]).toBe('lookup answer has no heartbeat_timeout');
    expect(errs[4]).toMatch(/answered 503: No conductor/);
  });

  it('refuses an Ironic older than 1.22 (no ramdisk endpoints) and keeps retrying', async () => {
    let old = true;
    ironic = await startFakeIronic((req) => (req.path === '/' ? ironicRoot(old ? '1.9' : '1.82') : lookupAnswer()));
    client = new IronicClient({ apiUrls: [ironic.url], insecure: false, globalRequestId: null, forcedVersion: null });
    const cap = captureLog();
    let attempts = 0;
    await lookupNode(opts(client, { log: cap.log, macs: async () => ((old = ++attempts < 3), MACS) }));
    expect(cap.lines().filter((l) => l.msg === 'lookup failed; retrying').map((l) => l['err'])).toEqual([
      'Ironic API 1.9 is older than 1.22 and has no ramdisk endpoints',
      'Ironic API 1.9 is older than 1.22 and has no ramdisk endpoints',
    ]);
    expect(ironic.to('/v1/lookup')).toHaveLength(1);
  });

  it('uses a forced API version without discovery', async () => {
    ironic = await startFakeIronic(() => lookupAnswer());
    client = new IronicClient({ apiUrls: [ironic.url], insecure: false, globalRequestId: 'req-42', forcedVersion: '1.68' });
    await lookupNode(opts(client));
    expect(ironic.requests.map((r) => r.path)).toEqual(['/v1/lookup']);
    expect(ironic.requests[0]!.headers['x-openstack-ironic-api-version']).toBe('1.62');
    expect(ironic.requests[0]!.headers['x-openstack-request-id']).toBe('req-42');
  });

  it('falls over to the next API URL on connection errors', async () => {
    const dead = `http://127.0.0.1:${await unusedPort()}`;
    ironic = await startFakeIronic((req) => (req.path === '/' ? ironicRoot('1.82') : lookupAnswer()));
    client = new IronicClient({ apiUrls: [dead, ironic.url], insecure: false, globalRequestId: null, forcedVersion: null });
    const res = await lookupNode(opts(client));
    expect(res.node.uuid).toBe(NODE_UUID);
    expect(client.apiUrl).toBe(ironic.url);
    expect(ironic.requests.map((r) => r.path)).toEqual(['/', '/v1/lookup']);
  });

  it('accepts a legacy answer with a top-level heartbeat_timeout', async () => {
    const c = await setup(() => ({ status: 200, json: { node: { uuid: NODE_UUID }, heartbeat_timeout: 60 } }));
    const res = await lookupNode(opts(c));
    expect(res.heartbeatTimeout).toBe(60);
  });

  it('stops when aborted', async () => {
    const c = await setup(() => ironicError(404, 'x'));
    const ac = new AbortController();
    const p = lookupNode(opts(c, { signal: ac.signal, timeoutSec: 0, interval: 5, maxInterval: 5 }));
    await ironic!.waitFor(() => ironic!.to('/v1/lookup').length === 1);
    ac.abort();
    await expect(p).rejects.toThrow(/abort/i);
  });
});
