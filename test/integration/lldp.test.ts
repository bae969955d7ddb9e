// Passive LLDP on real links: the agent (a real process, standalone, --collect-lldp) listens on two
// veth ends; from the far end of one of them a raw AF_PACKET socket sends a switch's LLDP
// announcement every second, as a switch does. poll.get_hardware_info must then report that
// interface's TLVs exactly as IPA does ([[type, value hex]…], End of LLDPDU included) and [] for
// the interface that heard nothing, after waiting for its listening window (--lldp-timeout), as
// IPA's collect_lldp_data waits. The tcpdump captures must be gone when the agent stops.
//
//   host namespace                         namespace ferrum-<id> ("the switch")
//   <hostIf>  (agent, hears LLDP)  <---->  <nsIf>   python3 AF_PACKET sender
//   <quietIf> (agent, hears nothing) <-->  <quietPeer>
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, test } from 'vitest';
import { freePort, startAgent, type AgentProcess, type LogLine } from '../helpers/agent-process.js';
import { buildLldpFrame, startLldpSender, type LldpSender, type Tlv } from '../helpers/lldp.js';
import { createLoopDevice, sh, type LoopDevice } from '../helpers/loop-device.js';
import { createNetNamespace, type NetNamespace } from '../helpers/netns.js';
import { suiteLifecycle, type Teardown } from '../helpers/suite-lifecycle.js';

const LLDP_TIMEOUT = 20;

let ns: NetNamespace | null = null;
let quietIf = '';
let disk: LoopDevice | null = null;
let agent: AgentProcess | null = null;
let sender: LldpSender | null = null;
let startedAt = 0;
/** tcpdump PIDs seen on both interfaces before the switch started talking. */
let listeners: number[] = [];
const { frame, tlvs: SENT } = buildLldpFrame();

type Iface = { name: string; mac_address: string; lldp: Tlv[] | null };

async function must(cmd: string, args: string[]): Promise<string> {
  const res = await sh(cmd, args);
  if (res.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${res.code}): ${res.stderr.trim() || res.stdout.trim()}`);
  return res.stdout;
}

/** PIDs of tcpdump processes capturing on one of `ifaces`. */
function tcpdumpsOn(ifaces: string[]): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.endsWith('tcpdump') && ifaces.includes(argv[argv.indexOf('-i') + 1] ?? '')) pids.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

async function diagnostics(): Promise<string> {
  return `--- agent log (last lines)\n${(await agent?.log().catch(() => ''))?.split('\n').slice(-30).join('\n') ?? ''}`;
}

function waitForAgentLog(what: string, match: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine> {
  return agent!.waitForLog(what, match, { timeoutMs, diagnostics });
}

async function hardwareInfo(): Promise<{ interfaces: Iface[]; ms: number }> {
  const t0 = Date.now();
  const res = await fetch(`${agent!.url}/v1/commands/?wait=true`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'poll.get_hardware_info', params: {} }),
    signal: AbortSignal.timeout((LLDP_TIMEOUT + 30) * 1000),
  });
  const body = (await res.json()) as { command_status: string; command_error: unknown; command_result: { interfaces: Iface[] } };
  expect(res.status, JSON.stringify(body)).toBe(200);
  expect(body.command_status, JSON.stringify(body.command_error)).toBe('SUCCEEDED');
  return { interfaces: body.command_result.interfaces, ms: Date.now() - t0 };
}

/** If the test process dies without afterAll: at least end the agent and the sender, remove the veths, free the disk. */
function emergencyCleanup(): void {
  for (const p of [agent?.proc, sender?.proc]) if (p && p.exitCode === null) p.kill('SIGKILL');
  for (const pid of tcpdumpsOn([ns?.hostIf ?? '-', quietIf || '-'])) process.kill(pid, 'SIGKILL');
  if (quietIf) {
    try {
      execFileSync('ip', ['link', 'del', quietIf], { stdio: 'ignore' });
    } catch {
      // gone
    }
  }
  disk?.detachNow();
}

async function setUp(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the LLDP test needs root (network namespaces, raw sockets)');
  for (const tool of ['tcpdump', 'python3', 'ip', 'losetup']) {
    if ((await sh('sh', ['-c', `command -v ${tool}`])).code !== 0) throw new Error(`${tool} is missing: run scripts/install-deps.sh`);
  }
  ns = await createNetNamespace();
  quietIf = `fq${ns.name.slice(-6)}`;
  await must('ip', ['link', 'add', quietIf, 'type', 'veth', 'peer', 'name', `fr${ns.name.slice(-6)}`, 'netns', ns.name]);
  await must('ip', ['link', 'set', quietIf, 'up']);
  await must('ip', ['-n', ns.name, 'link', 'set', `fr${ns.name.slice(-6)}`, 'up']);
  // --devices: the agent treats this host as shared (no kernel modules loaded, nothing else touched).
  disk = await createLoopDevice(16);
  startedAt = Date.now();
  agent = await startAgent({
    port: await freePort(),
    args: [
      '--standalone',
      '--power', 'none',
      '--cmdline-file', '/dev/null',
      '--devices', disk.path,
      '--interfaces', `${ns.hostIf},${quietIf}`,
      '--collect-lldp',
      '--lldp-timeout', String(LLDP_TIMEOUT),
      '--debug',
    ],
  });
  // The switch starts talking once the agent listens (it repeats every second anyway).
  const deadline = Date.now() + 15_000;
  while ((listeners = tcpdumpsOn([ns.hostIf, quietIf])).length < 2) {
    if (Date.now() > deadline) throw new Error(`the agent started ${listeners.length} of 2 tcpdump captures in 15 s:\n${await diagnostics()}`);
    await sleep(100);
  }
  sender = await startLldpSender({ ifname: ns.nsIf, frame, execPrefix: ns.execPrefix, intervalSec: 1, durationSec: 90 });
}

async function tearDown({ step, keep }: Teardown): Promise<void> {
  const agentDir = agent ? dirname(agent.logFile) : null;
  await step(async () => sender?.stop());
  await step(async () => agent?.stop());
  await step(async () => quietIf && (await sh('ip', ['link', 'show', quietIf])).code === 0 && must('ip', ['link', 'del', quietIf]));
  await step(async () => ns?.destroy());
  await step(async () => disk?.destroy());
  if (keep) console.error(`kept for inspection: agent ${agentDir ?? '-'}`);
  else await step(async () => agentDir && rm(agentDir, { recursive: true, force: true }));
}

suiteLifecycle({ setUp, tearDown, emergency: emergencyCleanup });

describe('passive LLDP (--collect-lldp) on real links', () => {
  test('the listener is up on both interfaces and hears the switch on one of them', async () => {
    expect(listeners, 'one tcpdump per interface').toHaveLength(2);
    const heard = await waitForAgentLog('LLDP frame received', (l) => l.msg === 'LLDP frame received', 15_000);
    expect(heard).toMatchObject({ interface: ns!.hostIf, tlvs: SENT.length });
    expect(sender!.sent()).toBeGreaterThanOrEqual(1);
    // The capture on the link that heard ends at once; the quiet one keeps listening.
    const deadline = Date.now() + 5000;
    while (tcpdumpsOn([ns!.hostIf]).length > 0 && Date.now() < deadline) await sleep(100);
    expect(tcpdumpsOn([ns!.hostIf])).toEqual([]);
    if (Date.now() - startedAt < (LLDP_TIMEOUT - 3) * 1000) expect(tcpdumpsOn([quietIf])).toHaveLength(1);
  });

  test('poll.get_hardware_info reports the TLVs as IPA ([[type, hex]…]) and [] where nothing was heard', async () => {
    const { interfaces, ms } = await hardwareInfo();
    const byName = new Map(interfaces.map((i) => [i.name, i]));
    expect([...byName.keys()].sort()).toEqual([ns!.hostIf, quietIf].sort());

    const lldp = byName.get(ns!.hostIf)!.lldp!;
    expect(lldp).toEqual(SENT);
    // Spelled out, for the reader: what a switch announces, in IPA's shape.
    expect(lldp[0]).toEqual([1, '04a0369f123456']); // chassis ID: MAC a0:36:9f:12:34:56
    expect(lldp[1]).toEqual([2, `05${Buffer.from('Ethernet1/7').toString('hex')}`]); // port ID: interface name
    expect(lldp[2]).toEqual([3, '0078']); // TTL 120
    expect(lldp[4]).toEqual([5, Buffer.from('switch-a.example').toString('hex')]); // system name
    expect(lldp.at(-1)).toEqual([0, '']); // End of LLDPDU
    expect(lldp.every(([t, v]) => Number.isInteger(t) && /^([0-9a-f]{2})*$/.test(v))).toBe(true);

    expect(byName.get(quietIf)!.lldp).toEqual([]);
    // The quiet interface got its whole window: the answer came after the listening timed out.
    const quietDone = await waitForAgentLog('quiet interface done', (l) => l.msg === 'no LLDP frame heard' && l['interface'] === quietIf, 1000);
    expect(quietDone['timeout']).toBe(LLDP_TIMEOUT);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(LLDP_TIMEOUT * 1000);
    console.log(`get_hardware_info answered in ${ms} ms (${Math.round((Date.now() - startedAt) / 1000)} s after the agent started)`);
  });

  test('later inventories answer at once with the same data; stopping the agent leaves no tcpdump', async () => {
    const { interfaces, ms } = await hardwareInfo();
    expect(ms).toBeLessThan(5000);
    expect(interfaces.find((i) => i.name === ns!.hostIf)!.lldp).toEqual(SENT);
    expect(interfaces.find((i) => i.name === quietIf)!.lldp).toEqual([]);
    expect(tcpdumpsOn([ns!.hostIf, quietIf])).toEqual([]);
    expect(await agent!.stop()).toBe(0);
    expect(tcpdumpsOn([ns!.hostIf, quietIf])).toEqual([]);
  });
});
