// Conformance against the real thing: Debian's Ironic 21.4.4 (conductor + API) drives the built
// agent, running as a real process, through lookup, auto-TLS heartbeats, an API restart and two
// automated cleaning cycles on a loop device that is the agent's only disk.
//
// Ironic runs in its own network namespace, bound to 10.A.B.2; the agent's NIC is the host end of
// a veth pair (10.A.B.1, random MAC, the port Ironic looks it up by), so the agent finds its
// callback address with `ip route get` and Ironic calls it back over the link.
//
// To look at the agent while it holds a token, the node is put into maintenance before `provide`:
// in "clean wait" with maintenance set, Ironic records heartbeats (agent_url, certificate, time)
// but starts no clean step, and its clean-wait timeout does not run. Lifting maintenance resumes
// cleaning on the next heartbeat.
import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, test } from 'vitest';
import { AgentClient, AgentHttpError } from '../../src/conductor/agent-client.js';
import type { CommandResult } from '../../src/protocol/index.js';
import { freePort, startAgent, type AgentProcess, type LogLine } from '../helpers/agent-process.js';
import { IronicServer, assertIronicInstalled, type IronicNode } from '../helpers/ironic.js';
import { createLoopDevice, sh, type LoopDevice } from '../helpers/loop-device.js';
import { createNetNamespace, type NetNamespace } from '../helpers/netns.js';
import { suiteLifecycle, type Teardown } from '../helpers/suite-lifecycle.js';


const DISK_MIB = 64;
const HEARTBEAT_TIMEOUT = 10; // [api]ramdisk_heartbeat_timeout: the agent heartbeats every 3-6 s
const STATE_TIMEOUT_MS = 120_000;

let ns: NetNamespace | null = null;
let ironic: IronicServer | null = null;
let disk: LoopDevice | null = null;
let agent: AgentProcess | null = null;
let nodeUuid = '';
let agentPort = 0;
let callbackUrl = '';
let firstToken = '';

// ---------------------------------------------------------------------------------------- helpers

async function agentLog(): Promise<LogLine[]> {
  return agent ? await agent.logLines() : [];
}

async function diagnostics(): Promise<string> {
  const lines = (await agent?.log().catch(() => ''))?.split('\n').slice(-40).join('\n') ?? '';
  return [
    `--- agent log (last lines)\n${lines}`,
    ironic ? await ironic.tail('ironic-conductor', 40) : '',
    ironic ? await ironic.tail('ironic-api', 15) : '',
  ].join('\n');
}

/** Waits for an agent log line (from index `from` on) that matches. */
function waitForAgentLog(what: string, match: (l: LogLine) => boolean, timeoutMs: number, from = 0): Promise<LogLine> {
  return agent!.waitForLog(what, match, { timeoutMs, from, diagnostics });
}

async function waitForNode(what: string, check: (n: IronicNode) => boolean, timeoutMs: number): Promise<IronicNode> {
  const deadline = Date.now() + timeoutMs;
  let node = await ironic!.api.getNode(nodeUuid);
  while (!check(node)) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for Ironic to record ${what}; node: ${JSON.stringify(node.driver_internal_info)}\n${await diagnostics()}`);
    }
    await sleep(300);
    node = await ironic!.api.getNode(nodeUuid);
  }
  return node;
}

function waitForState(state: string): Promise<IronicNode> {
  return ironic!.api.waitForProvisionState(nodeUuid, state, { timeoutMs: STATE_TIMEOUT_MS, onFailure: diagnostics });
}

/** Runs a tool the test needs and fails loudly when it is missing or fails. */
async function must(cmd: string, args: string[]): Promise<string> {
  const res = await sh(cmd, args);
  if (res.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${res.code}): ${res.stderr.trim() || res.stdout.trim()}`);
  return res.stdout;
}

async function readDevice(path: string): Promise<Buffer> {
  return readFile(path);
}

async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readDevice(path)).digest('hex');
}

/** GPT with two partitions, ext4 on the second: what a deployed machine leaves behind. */
async function partitionDisk(dev: string): Promise<void> {
  await must('sgdisk', ['-Z', dev]);
  await must('sgdisk', ['-n', '1:0:+16M', '-t', '1:ef00', '-c', '1:ferrum-esp', '-n', '2:0:0', '-t', '2:8300', '-c', '2:ferrum-root', dev]);
  // partprobe adds the partitions with BLKPG (blockdev --rereadpt would drop them on loop devices).
  await must('partprobe', [dev]);
  const deadline = Date.now() + 10_000;
  while ((await sh('test', ['-b', `${dev}p2`])).code !== 0) {
    if (Date.now() > deadline) throw new Error(`${dev}p2 did not appear after partprobe`);
    await sleep(100);
  }
  await must('mkfs.ext4', ['-q', '-F', '-L', 'ferrum-test', `${dev}p2`]);
  expect(await must('blkid', ['-p', '-s', 'TYPE', '-o', 'value', `${dev}p2`])).toContain('ext4');
  expect(partitionRows(await must('sgdisk', ['-p', dev]))).toHaveLength(2);
}

function partitionRows(sgdiskPrint: string): string[] {
  return sgdiskPrint.split('\n').filter((l) => /^\s+\d+\s+\d+\s+\d+\s/.test(l));
}

interface DiskState {
  partitions: string[];
  sgdisk: string;
  wipefs: string;
  blkid: string;
  blkidCode: number;
  gptHeaderAtStart: boolean;
  gptHeaderAtEnd: boolean;
  mbrSignature: boolean;
  allZero: boolean;
  firstPartitionNode: boolean;
}

async function diskState(dev: string): Promise<DiskState> {
  const print = await sh('sgdisk', ['-p', dev]);
  const blkid = await sh('blkid', ['-p', dev]);
  const data = await readDevice(dev);
  return {
    partitions: partitionRows(print.stdout),
    sgdisk: print.stdout + print.stderr,
    wipefs: (await sh('wipefs', ['-n', dev])).stdout.trim(),
    blkid: blkid.stdout.trim(),
    blkidCode: blkid.code,
    gptHeaderAtStart: data.subarray(0, 34 * 512).includes('EFI PART'),
    gptHeaderAtEnd: data.subarray(data.length - 33 * 512).includes('EFI PART'),
    mbrSignature: data.readUInt16LE(510) === 0xaa55,
    allZero: data.every((byte) => byte === 0),
    firstPartitionNode: (await sh('test', ['-e', `${dev}p1`])).code === 0,
  };
}

/** No partition table, no signature anywhere a tool would look, and the kernel dropped the partitions. */
function expectNoMetadata(state: DiskState, when: string): void {
  expect(state.partitions, `${when}: sgdisk -p lists no partitions:\n${state.sgdisk}`).toEqual([]);
  expect(state.sgdisk, `${when}: sgdisk finds no GPT`).not.toMatch(/Found valid GPT/);
  expect(state.wipefs, `${when}: wipefs -n prints nothing`).toBe('');
  expect(state.blkid, `${when}: blkid -p finds nothing`).toBe('');
  expect(state.blkidCode, `${when}: blkid -p exit code 2 = nothing found`).toBe(2);
  expect(state.gptHeaderAtStart, `${when}: primary GPT header`).toBe(false);
  expect(state.gptHeaderAtEnd, `${when}: backup GPT header in the last sectors`).toBe(false);
  expect(state.mbrSignature, `${when}: MBR boot signature`).toBe(false);
  expect(state.firstPartitionNode, `${when}: the agent re-read the table, so p1 is gone`).toBe(false);
}

function client(token: string | null, pem: string): AgentClient {
  return new AgentClient({ url: callbackUrl, token, verifyCa: pem, requestTimeoutMs: 15_000 });
}

async function storedCertificate(node: IronicNode): Promise<string> {
  const path = node.driver_internal_info['agent_verify_ca'];
  expect(typeof path, 'driver_internal_info.agent_verify_ca is a path').toBe('string');
  return readFile(path as string, 'utf8');
}

async function expectRejected(p: Promise<unknown>): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, 'the agent must refuse the command').toBeInstanceOf(AgentHttpError);
  expect((err as AgentHttpError).status).toBe(401);
  expect((err as AgentHttpError).faultstring).toMatch(/token invalid/i);
}

const isExecute = (c: CommandResult) => c.command_name === 'execute_clean_step';

/**
 * Polls the agent's command history while cleaning runs: keeps the longest history seen (it is
 * gone after the simulated reboot), and takes the disk's state in the gap between the two clean
 * steps (the agent's next heartbeat, which starts erase_devices, comes ~5 s after the last one),
 * so that erase_devices_metadata's own work can be checked before shred overwrites everything.
 */
function watchCleaning(c: AgentClient, dev: string): { stop(): Promise<{ history: CommandResult[]; betweenSteps: DiskState | null }> } {
  let longest: CommandResult[] = [];
  let betweenSteps: DiskState | null = null;
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const list = await c.listCommands();
        if (list.length >= longest.length) longest = list;
        const execs = list.filter(isExecute);
        if (betweenSteps === null && execs.length === 1 && execs[0]!.command_status === 'SUCCEEDED' && list.at(-1) === execs[0]) {
          const state = await diskState(dev);
          // Only valid if the second step had not started when the snapshot was complete.
          if ((await c.listCommands()).filter(isExecute).length === 1) betweenSteps = state;
        }
      } catch {
        // between listeners or after the reboot: keep what we have
      }
      await sleep(200);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { history: longest, betweenSteps };
    },
  };
}

function stepsRun(history: CommandResult[]): string[] {
  return history
    .filter((c) => c.command_name === 'execute_clean_step')
    .map((c) => ((c.command_result as { clean_step?: { step?: string } } | null)?.clean_step?.step ?? '?'));
}

/**
 * Ironic's own record of the clean steps: what it started ("Executing {step} on node") and which
 * agent results it accepted ("clean command status for node … on step {step}: {… SUCCEEDED …}").
 */
function conductorSteps(log: string, uuid: string): { executed: string[]; succeeded: string[] } {
  const executed: string[] = [];
  const succeeded: string[] = [];
  for (const line of log.split('\n')) {
    const started = new RegExp(`Executing \\{'step': '([a-z_]+)'.* on node ${uuid}`).exec(line);
    if (started) executed.push(started[1]!);
    const status = new RegExp(`clean command status for node ${uuid} on step \\{'step': '([a-z_]+)'.*'command_status': 'SUCCEEDED'`).exec(line);
    if (status) succeeded.push(status[1]!);
  }
  return { executed, succeeded };
}

// ------------------------------------------------------------------------------------ lifecycle

/** If the test process exits without afterAll (crash, runner killed): at least free the disk and the agent. */
function emergencyCleanup(): void {
  if (agent && agent.proc.exitCode === null) agent.proc.kill('SIGKILL');
  disk?.detachNow();
}

async function setUp(): Promise<void> {
  // Fail (never skip) when the machine is not prepared.
  if (process.getuid?.() !== 0) throw new Error('the Ironic conformance tests need root (network namespaces, loop devices)');
  await assertIronicInstalled();
  for (const tool of ['sgdisk', 'partprobe', 'wipefs', 'blkid', 'mkfs.ext4', 'losetup', 'shred', 'ip']) {
    if ((await sh('sh', ['-c', `command -v ${tool}`])).code !== 0) throw new Error(`${tool} is missing: run scripts/install-deps.sh`);
  }

  ns = await createNetNamespace();
  ironic = await IronicServer.start({ bindAddr: ns.nsAddr, execPrefix: ns.execPrefix, ramdiskHeartbeatTimeout: HEARTBEAT_TIMEOUT });

  disk = await createLoopDevice(DISK_MIB);
  await partitionDisk(disk.path);

  const node = await ironic.api.createNode({ name: `ferrum-${ns.name}` });
  nodeUuid = node.uuid;
  await ironic.api.createPort(nodeUuid, ns.hostMac);
  await ironic.api.setProvisionState(nodeUuid, 'manage');
  await waitForState('manageable');

  agentPort = await freePort();
  callbackUrl = `https://${ns.hostAddr}:${agentPort}`;
  agent = await startAgent({
    host: ns.hostAddr,
    port: agentPort,
    args: [
      '--api-url', ironic.apiUrl,
      // IPA advertises port 9999 whatever it listens on: say where we listen.
      '--advertise-port', String(agentPort),
      '--interfaces', ns.hostIf,
      '--devices', disk.path,
      '--power', 'none',
      '--lookup-max-interval', '2',
      '--cmdline-file', '/dev/null',
      '--debug',
    ],
  });
}

async function tearDown({ step, keep }: Teardown): Promise<void> {
  const agentDir = agent ? dirname(agent.logFile) : null;
  await step(async () => agent?.stop());
  await step(async () => ironic?.stop());
  await step(async () => disk?.destroy());
  await step(async () => ns?.destroy());
  if (keep) {
    console.error(`kept for inspection: agent ${agentDir ?? '-'}, Ironic ${ironic?.stateDir ?? '-'}`);
  } else {
    await step(async () => agentDir && rm(agentDir, { recursive: true, force: true }));
    await step(async () => ironic?.removeStateDir());
  }
}

suiteLifecycle({ setUp, tearDown, emergency: emergencyCleanup });

// ---------------------------------------------------------------------------------------- tests

describe('Ferrum agent driven by Ironic 21.4.4', () => {
  test('(a) lookup succeeds and heartbeats are answered 202, over an auto-TLS callback', async () => {
    await ironic!.api.setMaintenance(nodeUuid, true, 'hold in clean wait for the conformance checks');
    await ironic!.api.setProvisionState(nodeUuid, 'provide');
    await waitForState('clean wait');

    const lookup = await waitForAgentLog('lookup succeeded', (l) => l.msg === 'lookup succeeded', 60_000);
    expect(lookup['node']).toBe(nodeUuid);
    expect(lookup['macs']).toEqual([ns!.hostMac]);

    // The advertise address came from `ip route get 10.A.B.2`, and auto-TLS switched the listener.
    const hb = await waitForAgentLog('heartbeating', (l) => l.msg === 'heartbeating', 30_000);
    expect(hb['callback_url']).toBe(callbackUrl);
    expect(hb['heartbeat_timeout']).toBe(HEARTBEAT_TIMEOUT);
    await waitForAgentLog('advertise address', (l) => l.msg === 'advertise address detected' && l['advertise_host'] === ns!.hostAddr, 1000);

    // Ironic recorded what the heartbeat carried.
    const node = await waitForNode('agent_url', (n) => typeof n.driver_internal_info['agent_url'] === 'string', 30_000);
    const info = node.driver_internal_info;
    expect(info['agent_url']).toBe(callbackUrl);
    expect(info['agent_version']).toBe('9.4.3');
    expect(typeof info['agent_last_heartbeat']).toBe('string');
    expect(node.provision_state).toBe('clean wait');
    // No command yet: nothing to say, so the heartbeat is IPA's (no agent_status_message at 1.72).
    expect(info['agent_status_message']).toBeUndefined();

    // The certificate Ironic stored is the one the agent serves, and it verifies the agent.
    const pem = await storedCertificate(node);
    expect(pem).toContain('BEGIN CERTIFICATE');
    expect(pem.trim()).toBe((await readFile(`${dirname(agent!.logFile)}/agent.crt`, 'utf8')).trim());
    const verified = client(null, pem);
    try {
      expect(await verified.listCommands()).toEqual([]); // maintenance: no clean step was started
      expect((await verified.status()).version).toBe('9.4.3');
    } finally {
      await verified.close();
    }
    // Plain HTTP no longer gets an answer from the command API on the callback port.
    const plain = await fetch(`http://${ns!.hostAddr}:${agentPort}/v1/status`, { signal: AbortSignal.timeout(5000) }).then(
      (r) => r.status,
      () => 'refused',
    );
    expect(plain).not.toBe(200);

    // More heartbeats: each one accepted (202 in Ironic's access log, from the agent's address).
    const first = info['agent_last_heartbeat'];
    await waitForNode('a second heartbeat', (n) => n.driver_internal_info['agent_last_heartbeat'] !== first, 20_000);
    const accessLines = (await ironic!.apiLog()).split('\n').filter((l) => l.includes(`"POST /v1/heartbeat/${nodeUuid} `));
    expect(accessLines.length).toBeGreaterThanOrEqual(2);
    for (const l of accessLines) {
      expect(l).toContain(`${ns!.hostAddr} "POST`);
      expect(l).toMatch(/status: 202 /);
    }
    const log = await agentLog();
    expect(log.filter((l) => l.msg === 'heartbeat accepted').length).toBeGreaterThanOrEqual(2);
    expect(log.filter((l) => typeof l.msg === 'string' && /heartbeat (failed|refused|conflict)/.test(l.msg))).toEqual([]);

    // Keep the token Ironic issued (the API masks it) to tell it from the next one.
    const token = (await ironic!.internalInfoFromDb(nodeUuid))['agent_secret_token'];
    expect(typeof token).toBe('string');
    firstToken = token as string;
    expect(firstToken.length).toBeGreaterThanOrEqual(32);
  });

  test('(d) a command with a wrong or missing token gets 401 and changes nothing', async () => {
    const node = await ironic!.api.getNode(nodeUuid);
    expect(node.provision_state).toBe('clean wait');
    const pem = await storedCertificate(node);
    const anonymous = client(null, pem);
    const forger = client('x'.repeat(43), pem);
    const owner = client(firstToken, pem);
    try {
      const historyBefore = await anonymous.listCommands();
      const diskBefore = await sha256(disk!.path);
      const logMark = (await agentLog()).length;
      const step = { interface: 'deploy', step: 'erase_devices_metadata', priority: 99, args: {} };
      const params = { step, node: { uuid: nodeUuid }, ports: [], clean_version: null };

      await expectRejected(anonymous.execute('clean.execute_clean_step', params));
      await expectRejected(forger.execute('clean.execute_clean_step', params));
      await expectRejected(forger.execute('deploy.execute_deploy_step', { step, node: { uuid: nodeUuid }, ports: [], deploy_version: null }));
      await expectRejected(forger.execute('standby.power_off', {}, { wait: true }));
      await expectRejected(anonymous.execute('clean.get_clean_steps', { node: { uuid: nodeUuid }, ports: [] }, { wait: true }));
      await expectRejected(forger.execute('clean.get_clean_steps', { node: { uuid: nodeUuid }, ports: [] }, { wait: true }));

      await sleep(1000); // anything started in the background would show by now
      expect(await anonymous.listCommands()).toEqual(historyBefore);
      expect(await sha256(disk!.path)).toBe(diskBefore);
      expect(partitionRows(await must('sgdisk', ['-p', disk!.path]))).toHaveLength(2);
      const after = (await agentLog()).slice(logMark);
      expect(after.filter((l) => l.msg === 'command refused: invalid or missing agent token')).toHaveLength(6);
      expect(after.filter((l) => typeof l.msg === 'string' && /simulated|started|running clean step/.test(l.msg))).toEqual([]);
      expect((await ironic!.api.getNode(nodeUuid)).driver_internal_info['agent_url']).toBe(callbackUrl);

      // Control: the token Ironic issued is accepted (a read-only command, nothing changes).
      const steps = await owner.getCleanSteps({ uuid: nodeUuid }, []);
      const generic = steps.clean_steps['GenericHardwareManager'] ?? [];
      expect(generic.find((s) => s.step === 'erase_devices_metadata')).toMatchObject({ priority: 99, interface: 'deploy' });
      expect(steps.hardware_manager_version).toEqual({ generic_hardware_manager: '1.1' });
      expect(await sha256(disk!.path)).toBe(diskBefore);
    } finally {
      await Promise.all([anonymous.close(), forger.close(), owner.close()]);
    }
  });

  test('(c) the agent keeps heartbeating across an ironic-api restart', async () => {
    const before = (await ironic!.api.getNode(nodeUuid)).driver_internal_info['agent_last_heartbeat'];
    const mark = (await agentLog()).length;
    await ironic!.stopApi();
    try {
      // Failures are retried every 5 s: wait for two of them.
      const isFailure = (l: LogLine) => typeof l.msg === 'string' && l.msg.startsWith('heartbeat failed');
      await waitForAgentLog('a failed heartbeat', isFailure, 30_000, mark);
      const firstFailure = (await agentLog()).slice(mark).findIndex(isFailure) + mark;
      await waitForAgentLog('a second failed heartbeat', isFailure, 20_000, firstFailure + 1);
      expect(agent!.proc.exitCode).toBeNull();
    } finally {
      await ironic!.startApi();
    }
    await waitForAgentLog('heartbeat accepted again', (l) => l.msg === 'heartbeat accepted again', 30_000, mark);
    const node = await waitForNode('a heartbeat after the restart', (n) => n.driver_internal_info['agent_last_heartbeat'] !== before, 20_000);
    expect(node.provision_state).toBe('clean wait');
    expect(node.driver_internal_info['agent_url']).toBe(callbackUrl);
    // Same boot, same token: the agent did not start over.
    expect((await ironic!.internalInfoFromDb(nodeUuid))['agent_secret_token']).toBe(firstToken);
    expect((await agentLog()).slice(mark).filter((l) => l.msg === 'lookup succeeded')).toEqual([]);
  });

  test('(b) automated cleaning runs erase_devices_metadata through the agent and wipes the disk', async () => {
    const node = await ironic!.api.getNode(nodeUuid);
    const watcher = watchCleaning(client(null, await storedCertificate(node)), disk!.path);
    const mark = (await agentLog()).length;
    let watched: Awaited<ReturnType<ReturnType<typeof watchCleaning>['stop']>> = { history: [], betweenSteps: null };
    try {
      await ironic!.api.setMaintenance(nodeUuid, false);
      const done = await waitForState('available');
      expect(done.last_error).toBeNull();
      expect(done.maintenance).toBe(false);
    } finally {
      watched = await watcher.stop();
    }
    const history = watched.history;

    // Ironic ran the agent's steps in priority order and saw each one finish.
    const steps = conductorSteps(await ironic!.conductorLog(), nodeUuid);
    expect(steps.executed).toEqual(['erase_devices_metadata', 'erase_devices']);
    expect(steps.succeeded).toEqual(['erase_devices_metadata', 'erase_devices']);
    expect(await ironic!.conductorLog()).toContain(`Node ${nodeUuid} cleaning complete`);

    // What the conductor read back from the agent: IPA's result shape.
    expect(history.map((c) => c.command_name)).toEqual(['get_clean_steps', 'get_clean_steps', 'execute_clean_step', 'execute_clean_step']);
    expect(history.every((c) => c.command_status === 'SUCCEEDED' && c.command_error === null)).toBe(true);
    expect(stepsRun(history)).toEqual(['erase_devices_metadata', 'erase_devices']);
    expect(history[2]!.command_result).toMatchObject({ clean_result: null, clean_step: { step: 'erase_devices_metadata', interface: 'deploy', priority: 99 } });

    // erase_devices_metadata wiped the partitions' signatures, then the disk's tables...
    const log = (await agentLog()).slice(mark);
    const wiped = log.filter((l) => l.msg === 'wiping signatures').map((l) => l['device']);
    expect(wiped).toEqual([`${disk!.path}p2`, `${disk!.path}p1`, disk!.path]);
    expect(watched.betweenSteps, 'disk state observed between erase_devices_metadata and erase_devices').not.toBeNull();
    expectNoMetadata(watched.betweenSteps!, 'after erase_devices_metadata');
    expect(watched.betweenSteps!.allZero, 'metadata wipe only: ext4 data blocks are still there').toBe(false);
    // ...and erase_devices overwrote all of it (shred, random pass then zeros).
    expect(log.some((l) => l.msg === 'overwriting disk' && l['device'] === disk!.path)).toBe(true);
    const final = await diskState(disk!.path);
    expectNoMetadata(final, 'after cleaning');
    expect(final.allZero, 'device is all zeros after erase_devices').toBe(true);

    // The heartbeat forced by the last step's end told Ironic how it ended; Ironic recorded it.
    expect((await ironic!.api.getNode(nodeUuid)).driver_internal_info['agent_status_message']).toMatch(/^execute_clean_step SUCCEEDED after \d+ s$/);

    // Cleaning ended with a (fake) power off: Ironic dropped the token and URL, the agent noticed
    // on its next heartbeat and "rebooted" back into lookup.
    expect((await ironic!.api.getNode(nodeUuid)).driver_internal_info['agent_url']).toBeUndefined();
    await waitForAgentLog('simulated reboot', (l) => l.msg === 'simulated reboot done: looking up again', 30_000, mark);
  });

  test('(c) a second cycle (manage, provide) works: fresh lookup with a new token after the simulated reboot', async () => {
    await partitionDisk(disk!.path); // something to erase again
    const mark = (await agentLog()).length;
    await ironic!.api.setProvisionState(nodeUuid, 'manage');
    await waitForState('manageable');
    await ironic!.api.setMaintenance(nodeUuid, true, 'check the new token');
    await ironic!.api.setProvisionState(nodeUuid, 'provide');
    await waitForState('clean wait');

    await waitForAgentLog('a new lookup', (l) => l.msg === 'lookup succeeded', 60_000, mark);
    const node = await waitForNode('the new agent_url', (n) => n.driver_internal_info['agent_url'] === callbackUrl, 30_000);
    const secondToken = (await ironic!.internalInfoFromDb(nodeUuid))['agent_secret_token'];
    expect(typeof secondToken).toBe('string');
    expect(secondToken).not.toBe(firstToken);

    const pem = await storedCertificate(node);
    const stale = client(firstToken, pem);
    const owner = client(secondToken as string, pem);
    try {
      // The reboot emptied the history; the old token is dead, the new one works.
      expect(await owner.listCommands()).toEqual([]);
      await expectRejected(stale.execute('clean.get_clean_steps', { node: { uuid: nodeUuid }, ports: [] }, { wait: true }));
      await owner.getCleanSteps({ uuid: nodeUuid }, []);
    } finally {
      await Promise.all([stale.close(), owner.close()]);
    }

    await ironic!.api.setMaintenance(nodeUuid, false);
    const done = await waitForState('available');
    expect(done.last_error).toBeNull();
    const final = await diskState(disk!.path);
    expectNoMetadata(final, 'after the second cleaning');
    expect(final.allZero).toBe(true);
    const log = (await agentLog()).slice(mark);
    expect(log.filter((l) => l.msg === 'command clean.execute_clean_step done' && l['status'] === 'SUCCEEDED')).toHaveLength(2);
    expect(log.filter((l) => typeof l.msg === 'string' && /heartbeat failed|agent failed|uncaught/.test(l.msg))).toEqual([]);
  });
});
