// Rescue driven by the real Ironic 21.4.4 (`baremetal node rescue --rescue-password …`): the node is
// active (fake deploy, then the direct deploy interface, which handles heartbeats), Ironic moves it to "rescue wait" and fake-reboots it into the ramdisk; our
// agent (power none: it is already running) looks up, heartbeats, and Ironic sends
// rescue.finalize_rescue with the password hashed by the conductor. Checked: the node reaches
// "rescue" with no error; the agent wrote exactly the hash Ironic sent, which verifies against the
// plain password (crypt(3), checked with Python's crypt as IPA would have made it); the agent's API
// is closed and its heartbeats have stopped; unrescue brings the node back to active.
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { freePort, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { IronicServer, assertIronicInstalled } from '../helpers/ironic.js';
import { createLoopDevice, type LoopDevice } from '../helpers/loop-device.js';
import { createNetNamespace, type NetNamespace } from '../helpers/netns.js';

const PASSWORD = 'Ferrum-rescue-p4ss word';
let ns: NetNamespace | null = null;
let ironic: IronicServer | null = null;
let disk: LoopDevice | null = null;
let agent: AgentProcess | null = null;
let workDir = '';
let failed = true;

async function diagnostics(): Promise<string> {
  const lines = (await agent?.log().catch(() => ''))?.split('\n').slice(-30).join('\n') ?? '';
  return [`--- agent log (last lines)\n${lines}`, ironic ? await ironic.tail('ironic-conductor', 40) : ''].join('\n');
}

describe('rescue with the real Ironic 21.4.4', () => {
  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('the Ironic tests need root (network namespaces, loop devices)');
    await assertIronicInstalled();
    workDir = await mkdtemp(join(tmpdir(), 'ferrum-rescue-'));
    ns = await createNetNamespace();
    ironic = await IronicServer.start({ bindAddr: ns.nsAddr, execPrefix: ns.execPrefix, ramdiskHeartbeatTimeout: 10, rescue: true });
    disk = await createLoopDevice(4608);
  }, 300_000);

  afterAll(async () => {
    await agent?.stop().catch(() => undefined);
    await ironic?.stop().catch(() => undefined);
    await disk?.destroy().catch(() => undefined);
    await ns?.destroy().catch(() => undefined);
    if (failed) {
      console.error(`kept for inspection: Ironic ${ironic?.stateDir ?? '-'}, agent and password file under ${workDir}`);
    } else {
      await ironic?.removeStateDir().catch(() => undefined);
      await rm(workDir, { recursive: true, force: true });
    }
  }, 120_000);

  test('rescue: finalize_rescue stores the conductor-hashed password, the agent stops serving; unrescue', async () => {
    const api = ironic!.api;
    const node = await api.createNode({ name: `ferrum-rescue-${ns!.name}`, deployInterface: 'fake', rescueInterface: 'agent' });
    await api.createPort(node.uuid, ns!.hostMac);
    await api.setProvisionState(node.uuid, 'manage');
    await api.waitForProvisionState(node.uuid, 'manageable', { timeoutMs: 120_000, onFailure: diagnostics });
    await api.setProvisionState(node.uuid, 'provide');
    await api.waitForProvisionState(node.uuid, 'available', { timeoutMs: 120_000, onFailure: diagnostics });
    await api.setProvisionState(node.uuid, 'active');
    await api.waitForProvisionState(node.uuid, 'active', { timeoutMs: 120_000, onFailure: diagnostics });
    // Active without writing an image (fake deploy); heartbeats are handled by the deploy
    // interface, so the node now gets the agent's (direct). Interfaces of an active node change
    // only in maintenance.
    await api.setMaintenance(node.uuid, true);
    await api.patchNode(node.uuid, [{ op: 'replace', path: '/deploy_interface', value: 'direct' }]);
    await api.setMaintenance(node.uuid, false);

    const passwordFile = join(workDir, 'ipa-rescue-config', 'ipa-rescue-password');
    const port = await freePort();
    agent = await startAgent({
      host: ns!.hostAddr,
      port,
      args: ['--api-url', ironic!.apiUrl, '--advertise-port', String(port), '--interfaces', ns!.hostIf, '--devices', disk!.path, '--power', 'none',
        '--lookup-max-interval', '2', '--cmdline-file', '/dev/null', '--rescue-password-file', passwordFile, '--debug'],
    });

    await api.setProvisionState(node.uuid, 'rescue', { rescue_password: PASSWORD });
    const rescued = await api.waitForProvisionState(node.uuid, 'rescue', { timeoutMs: 180_000, onFailure: diagnostics });
    expect(rescued.last_error).toBeNull();

    // What Ironic sent: the conductor's hash of the password (hashed=true), written as it came.
    const conductorLog = await ironic!.conductorLog();
    expect(conductorLog).toMatch(/rescue\.finalize_rescue/);
    const hash = await readFile(passwordFile, 'utf8');
    expect(hash).toMatch(/^\$[56]\$[^$]+\$[./0-9A-Za-z]+$/);
    expect(hash).not.toContain(PASSWORD);
    const verified = execFileSync('python3', ['-W', 'ignore', '-c', 'import crypt,sys; print(crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2])', PASSWORD, hash], { encoding: 'utf8' }).trim();
    expect(verified).toBe('True');
    expect((await stat(passwordFile)).mode & 0o777).toBe(0o600);

    // The agent stops serving: its API refuses connections, and heartbeats stop.
    await sleep(1000);
    const answered = await fetch(`${agent.url}/v1/status`, { signal: AbortSignal.timeout(3000) }).then(() => true, () => false);
    expect(answered, 'the command API still answers after finalize_rescue').toBe(false);
    const hbBefore = (await api.getNode(node.uuid)).driver_internal_info['agent_last_heartbeat'];
    await sleep(12_000); // more than the heartbeat interval (10 s x 0.3-0.6) could ever be
    const hbAfter = (await api.getNode(node.uuid)).driver_internal_info['agent_last_heartbeat'];
    expect(hbAfter).toEqual(hbBefore);
    expect(agent.proc.exitCode, 'the agent process stays (idle) instead of exiting into a systemd restart').toBeNull();
    const lines = await agent.logLines();
    expect(lines.some((l) => /no longer serving/.test(String(l['msg'])))).toBe(true);

    await api.setProvisionState(node.uuid, 'unrescue');
    const back = await api.waitForProvisionState(node.uuid, 'active', { timeoutMs: 120_000, onFailure: diagnostics });
    expect(back.last_error).toBeNull();
    failed = false;
  }, 600_000);
});
