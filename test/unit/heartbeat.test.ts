import { describe, expect, it, type TestContext } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { FORCED_MIN_GAP_MS, Heartbeater, RETRY_AFTER_FAILURE_MS, heartbeatInterval } from '../../src/agent/heartbeat.js';
import { IronicClient } from '../../src/agent/ironic-client.js';
import { captureLog } from './support/log-capture.js';
import { FakeIronic, NODE_UUID, TOKEN, ironicError, ironicRoot, startFakeIronic, unusedPort } from './support/fake-ironic.js';
import { ACCEPTED, CA, CALLBACK, HB_PATH, gaps, rig, type Rig } from './support/heartbeat-rig.js';

describe('heartbeatInterval', () => {
  it('is heartbeat_timeout × U(0.3, 0.6), in ms', () => {
    expect(heartbeatInterval(300, () => 0)).toBe(90_000);
    expect(heartbeatInterval(300, () => 1)).toBe(180_000);
    expect(heartbeatInterval(300, () => 0.5)).toBe(135_000);
    for (let i = 0; i < 100; i++) {
      const v = heartbeatInterval(300);
      expect(v).toBeGreaterThanOrEqual(90_000);
      expect(v).toBeLessThanOrEqual(180_000);
    }
  });

  it('keeps the IPA constants as defaults', () => {
    expect(RETRY_AFTER_FAILURE_MS).toBe(5000);
    expect(FORCED_MIN_GAP_MS).toBe(5000);
  });
});


// Concurrent: these tests mostly wait for timers, so they overlap; each closes its own rig.
describe.concurrent('Heartbeater against a local Ironic', () => {
  const use = async (t: TestContext, o: Parameters<typeof rig>[0]): Promise<Rig> => {
    const r = await rig(o);
    t.onTestFinished(() => r.close());
    return r;
  };

  // Real 5 s waits (the IPA defaults), first, so they overlap with the rest
  // (at most 5 concurrent tests).
  it('with the IPA defaults, retries a failure ~5 s later', async () => {
    let n = 0;
    const r = await rig({ handler: () => (++n === 1 ? ironicError(503, 'down') : ACCEPTED) });
    try {
      r.hb.start();
      await r.ironic.waitFor(() => r.hb.stats.accepted === 1, 8000);
      // Measured between arrivals; the first request also paid for version discovery.
      const [gap] = gaps(r.beats());
      expect(gap).toBeGreaterThanOrEqual(4800);
      expect(gap).toBeLessThan(5600);
    } finally {
      await r.close();
    }
  });

  it('with the IPA defaults, sends a forced heartbeat 5 s after the last success', async () => {
    const r = await rig({});
    try {
      r.hb.start();
      await r.ironic.waitFor(() => r.hb.stats.accepted === 1);
      r.hb.force();
      await r.ironic.waitFor(() => r.beats().length === 2, 8000);
      // Measured between arrivals; the first request also paid for version discovery.
      const [gap] = gaps(r.beats());
      expect(gap).toBeGreaterThanOrEqual(4800);
      expect(gap).toBeLessThan(5600);
    } finally {
      await r.close();
    }
  });

  it('sends the first heartbeat at once, to /v1/heartbeat/<uuid>, expecting 202', async (t) => {
    const r = await use(t, {});
    const started = Date.now();
    r.hb.start();
    await r.ironic.waitFor(() => r.beats().length === 1);
    const beat = r.beats()[0]!;
    expect(beat.at - started).toBeLessThan(500);
    expect(beat.method).toBe('POST');
    expect(beat.headers['content-type']).toBe('application/json');
    expect(beat.headers['accept']).toBe('application/json');
    expect(beat.headers['x-openstack-request-id']).toBe('req-hb');
    await r.ironic.waitFor(() => r.hb.stats.accepted === 1);
    expect(r.hb.stats).toEqual({ sent: 1, accepted: 1, failed: 0 });
  });

  it.for([
    ['1.31', '1.31', { callback_url: CALLBACK }],
    ['1.36', '1.36', { callback_url: CALLBACK, agent_version: '9.4.3' }],
    ['1.61', '1.61', { callback_url: CALLBACK, agent_version: '9.4.3' }],
    ['1.62', '1.62', { callback_url: CALLBACK, agent_token: TOKEN, agent_version: '9.4.3' }],
    ['1.67', '1.67', { callback_url: CALLBACK, agent_token: TOKEN, agent_version: '9.4.3' }],
    ['1.68', '1.68', { callback_url: CALLBACK, agent_token: TOKEN, agent_version: '9.4.3', agent_verify_ca: CA }],
    ['1.82', '1.68', { callback_url: CALLBACK, agent_token: TOKEN, agent_version: '9.4.3', agent_verify_ca: CA }],
  ] as const)('server %s: header %s and only the fields that version allows', async ([server, header, body], t) => {
    const r = await use(t, { version: server });
    r.hb.start();
    await r.ironic.waitFor(() => r.beats().length === 1);
    const beat = r.beats()[0]!;
    expect(beat.headers['x-openstack-ironic-api-version']).toBe(header);
    expect(JSON.parse(beat.body)).toEqual(body);
  });

  it.for([
    ['1.82', 'writing 1.20 of 2.00 GiB', '1.72', true],
    ['1.72', 'writing 1.20 of 2.00 GiB', '1.72', true],
    ['1.71', 'writing 1.20 of 2.00 GiB', '1.68', false],
    ['1.82', undefined, '1.68', false],
  ] as const)('server %s, status message %s: header %s, agent_status_message sent: %s', async ([server, message, header, sent], t) => {
    const body = { callback_url: CALLBACK, agent_token: TOKEN, agent_version: '9.4.3', ...(message ? { agent_status_message: message } : {}) };
    const r = await use(t, { version: server, body: async () => body });
    r.hb.start();
    await r.ironic.waitFor(() => r.beats().length === 1);
    const beat = r.beats()[0]!;
    expect(beat.headers['x-openstack-ironic-api-version']).toBe(header);
    const got = JSON.parse(beat.body) as Record<string, unknown>;
    expect(got['agent_status_message']).toBe(sent ? message : undefined);
    // Never agent_status: its values (start, end, error) drive the anaconda deploy interface.
    expect('agent_status' in got).toBe(false);
    expect(got['agent_token']).toBe(TOKEN);
  });

  it('sends agent_token null at >= 1.62 when it has none, and no agent_verify_ca without a certificate', async (t) => {
    const r = await use(t, { version: '1.82', body: async () => ({ callback_url: 'http://10.0.0.15:9999', agent_token: null, agent_version: '9.4.3' }) });
    r.hb.start();
    await r.ironic.waitFor(() => r.beats().length === 1);
    expect(JSON.parse(r.beats()[0]!.body)).toEqual({ callback_url: 'http://10.0.0.15:9999', agent_token: null, agent_version: '9.4.3' });
  });

  it.for([
    [0, 300],
    [1, 600],
  ] as const)('after a success waits heartbeat_timeout × (0.3 + 0.3 × %d)', async ([random, expected], t) => {
    const r = await use(t, { hb: { heartbeatTimeout: 1, random: () => random } });
    r.hb.start();
    await r.ironic.waitFor(() => r.beats().length === 3, 5000);
    for (const gap of gaps(r.beats())) {
      expect(gap).toBeGreaterThanOrEqual(expected - 100); // arrivals; the first also paid for discovery
      expect(gap).toBeLessThan(expected + 200);
    }
  });

  it('draws a new interval after every heartbeat', async (t) => {
    const draws = [0, 1, 0];
    let i = 0;
    const r = await use(t, { hb: { heartbeatTimeout: 0.5, random: () => draws[i++ % draws.length]! } });
    r.hb.start();
    await r.ironic.waitFor(() => r.beats().length === 4, 5000);
    const [a, b, c] = gaps(r.beats());
    expect(a).toBeGreaterThanOrEqual(100);
    expect(a).toBeLessThan(260);
    expect(b).toBeGreaterThanOrEqual(250);
    expect(b).toBeLessThan(450);
    expect(c).toBeGreaterThanOrEqual(120);
    expect(c).toBeLessThan(260);
  });

  it('retries a failed heartbeat after retryAfterFailureMs, then goes back to the normal interval', async (t) => {
    let n = 0;
    const cap = captureLog();
    const r = await use(t, {
      handler: () => (++n <= 2 ? ironicError(503, 'No free conductor workers available') : ACCEPTED),
      hb: { retryAfterFailureMs: 100, heartbeatTimeout: 100, log: cap.log },
    });
    r.hb.start();
    await r.ironic.waitFor(() => r.hb.stats.accepted === 1);
    const beats = r.beats();
    expect(beats).toHaveLength(3);
    for (const gap of gaps(beats)) {
      expect(gap).toBeGreaterThanOrEqual(60);
      expect(gap).toBeLessThan(400);
    }
    await sleep(300);
    expect(r.beats()).toHaveLength(3); // the next one is 30–60 s away
    expect(r.hb.stats).toEqual({ sent: 3, accepted: 1, failed: 2 });
    const msgs = cap.messages();
    expect(msgs.filter((m) => m.startsWith('heartbeat failed:'))).toHaveLength(2);
    expect(msgs[0]).toContain('answered 503: No free conductor workers available');
    expect(msgs).toContain('heartbeat accepted again');
  });

  it('logs a 409 as a warning and retries', async (t) => {
    let n = 0;
    const cap = captureLog();
    const r = await use(t, {
      handler: () => (++n === 1 ? ironicError(409, 'Node is locked by host conductor-1') : ACCEPTED),
      hb: { retryAfterFailureMs: 50, log: cap.log },
    });
    r.hb.start();
    await r.ironic.waitFor(() => r.hb.stats.accepted === 1);
    const warn = cap.lines().find((l) => l.level === 40)!;
    expect(warn.msg).toBe('heartbeat conflict (409): Node is locked by host conductor-1');
  });

  it('force() after a success waits until forcedMinGapMs after the last success', async (t) => {
    const r = await use(t, { hb: { heartbeatTimeout: 100, forcedMinGapMs: 300 } });
    r.hb.start();
    await r.ironic.waitFor(() => r.hb.stats.accepted === 1);
    const first = r.beats()[0]!.at;
    r.hb.force();
    await r.ironic.waitFor(() => r.beats().length === 2);
    const second = r.beats()[1]!.at;
    expect(second - first).toBeGreaterThanOrEqual(200);
    expect(second - first).toBeLessThan(600);
    // Long after the last success, a forced heartbeat goes out at once.
    await sleep(350);
    const forcedAt = Date.now();
    r.hb.force();
    await r.ironic.waitFor(() => r.beats().length === 3);
    expect(r.beats()[2]!.at - forcedAt).toBeLessThan(100);
    // A force is used up by the heartbeat that answered it.
    await sleep(400);
    expect(r.beats()).toHaveLength(3);
  });

  it('does not lose a force() that arrives while a heartbeat is in flight', async (t) => {
    let n = 0;
    const r = await use(t, {
      handler: async () => {
        if (++n === 2) await sleep(150); // the forced heartbeat is slow to answer
        return ACCEPTED;
      },
      hb: { heartbeatTimeout: 100, forcedMinGapMs: 250 },
    });
    r.hb.start();
    await r.ironic.waitFor(() => r.hb.stats.accepted === 1);
    r.hb.force(); // first async command ends
    await r.ironic.waitFor(() => r.beats().length === 2);
    await sleep(50);
    r.hb.force(); // a second command ends while that heartbeat is still in flight
    await r.ironic.waitFor(() => r.beats().length === 3, 3000);
    const [, b2, b3] = r.beats();
    expect(b3!.at - b2!.at).toBeGreaterThanOrEqual(200);
  });

  it('calls onTokenRejected on 400 "Invalid or missing agent token received." and stops', async (t) => {
    let rejected = 0;
    const r = await use(t, {
      handler: () => ironicError(400, 'Invalid or missing agent token received.'),
      hb: { onTokenRejected: () => rejected++, retryAfterFailureMs: 50 },
    });
    r.hb.start();
    await r.ironic.waitFor(() => rejected === 1);
    await sleep(200);
    expect(rejected).toBe(1);
    expect(r.beats()).toHaveLength(1);
  });

  it('without onTokenRejected keeps retrying a rejected token, and other 400s never call it', async (t) => {
    let n = 0;
    let rejected = 0;
    const r = await use(t, {
      handler: () => (++n === 1 ? ironicError(400, 'Detected change in ramdisk provided "callback_url"') : ironicError(400, 'Invalid or missing agent token received.')),
      hb: { retryAfterFailureMs: 50 },
    });
    r.hb.start();
    await r.ironic.waitFor(() => r.beats().length >= 4);
    expect(rejected).toBe(0);
    expect(r.hb.stats.failed).toBeGreaterThanOrEqual(3);

    let called = 0;
    const r2 = await rig({
      handler: () => ironicError(400, 'Detected change in ramdisk provided "callback_url"'),
      hb: { retryAfterFailureMs: 50, onTokenRejected: () => called++ },
    });
    try {
      r2.hb.start();
      await r2.ironic.waitFor(() => r2.beats().length >= 3);
      expect(called).toBe(0);
    } finally {
      await r2.close();
    }
  });

  it('keeps retrying through connection refused and recovers when Ironic comes back', async () => {
    const port = await unusedPort();
    const client = new IronicClient({ apiUrls: [`http://127.0.0.1:${port}`], insecure: false, globalRequestId: null, forcedVersion: null });
    const cap = captureLog();
    const hb = new Heartbeater({
      client,
      nodeUuid: NODE_UUID,
      heartbeatTimeout: 300,
      log: cap.log,
      body: async () => ({ callback_url: CALLBACK, agent_token: TOKEN, agent_version: '9.4.3' }),
      retryAfterFailureMs: 50,
    });
    let ironic: FakeIronic | null = null;
    try {
      hb.start();
      const deadline = Date.now() + 5000;
      while (hb.stats.failed < 3 && Date.now() < deadline) await sleep(10);
      expect(hb.stats.failed).toBeGreaterThanOrEqual(3);
      expect(hb.stats.accepted).toBe(0);
      expect(cap.messages()[0]).toMatch(/^heartbeat failed: cannot reach http:\/\/127\.0\.0\.1:\d+\//);
      ironic = await startFakeIronic((req) => (req.path === '/' ? ironicRoot('1.82') : ACCEPTED), port);
      await ironic.waitFor(() => hb.stats.accepted === 1);
      expect(ironic.to(HB_PATH)).toHaveLength(1);
      expect(cap.messages()).toContain('heartbeat accepted again');
    } finally {
      await hb.stop();
      await client.close();
      await ironic?.close();
    }
  });

  it('stop() ends the loop', async (t) => {
    const r = await use(t, { hb: { heartbeatTimeout: 0.2 } });
    r.hb.start();
    await r.ironic.waitFor(() => r.beats().length === 2);
    await r.hb.stop();
    const count = r.beats().length;
    await sleep(250);
    expect(r.beats()).toHaveLength(count);
  });
});
