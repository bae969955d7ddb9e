// In-band inspection against the real thing: Debian's Ironic 21.4.4 with the `inspector` inspect
// interface and Debian's ironic-inspector 11.1 (standalone, SQLite, fake:// transport,
// add_ports=all, default processing hooks + lldp_basic + local_link_connection), both in a
// network namespace. The node is enrolled with no ports; `inspect` makes Ironic hand it to the
// inspector; the built agent, a real process, posts its data to /v1/continue; the inspector
// creates the port and sets cpus/memory_mb/local_gb/cpu_arch from our inventory, Ironic ends in
// `manageable`. The same agent process then carries on to lookup (with the node UUID the
// inspector answered) and, after `provide`, is looked up and cleaned by Ironic.
//
// How the inspector finds a node without ports: by its BMC address (driver_info.ipmi_address =
// inventory.bmc_address), as for real portless servers. This host has no BMC, so the agent runs
// on a simulated one: in a private mount namespace, /dev is overlaid with an `ipmi0` entry (so the
// agent asks ipmitool, as on a machine with an IPMI device) and `ipmitool` on its PATH is a stub
// answering `lan print 1` like a BMC with address BMC_IP. Nothing outside the agent's mount
// namespace changes. The switch side of the veth sends LLDP (raw AF_PACKET socket) so that the
// inspector's LLDP hooks see our TLVs.
//
//   host namespace                               namespace ferrum-<id>
//   agent: <hostIf> 10.A.B.1, MAC = BOOTIF <---> <nsIf> 10.A.B.2: ironic-api :6385, conductor,
//          (+ stub BMC 198.51.100.x)                ironic-inspector :5050, LLDP sender
import { rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, test } from 'vitest';
import type { Inventory } from '../../src/protocol/inventory.js';
import { freePort, startAgent, type AgentProcess, type LogLine } from '../helpers/agent-process.js';
import { IronicServer, assertInspectorInstalled, assertIronicInstalled, type IronicNode } from '../helpers/ironic.js';
import { DEFAULT_SWITCH, buildLldpFrame, startLldpSender, type LldpSender } from '../helpers/lldp.js';
import { createLoopDevice, sh, type LoopDevice } from '../helpers/loop-device.js';
import { createNetNamespace, type NetNamespace } from '../helpers/netns.js';
import { suiteLifecycle, type Teardown } from '../helpers/suite-lifecycle.js';


const DISK_MIB = 8 * 1024; // sparse: local_gb must come out as 8 - 1
const STATE_TIMEOUT_MS = 120_000;
const GiB = 2 ** 30;
const BMC_IP = `198.51.100.${10 + Math.floor(Math.random() * 200)}`; // TEST-NET-2: never a real BMC
const BMC_MAC = '52:54:00:be:ef:17';
const ENROLLED = { cpu_arch: 'enrolled-arch', local_gb: 1, memory_mb: 1024, cpus: 1 };
/** BOOTIF as PXELINUX/iPXE put it on the kernel command line: the agent's NIC booted. */
const BOOTIF = () => `01-${ns!.hostMac.replace(/:/g, '-')}`;

let ns: NetNamespace | null = null;
let ironic: IronicServer | null = null;
let disk: LoopDevice | null = null;
let agent: AgentProcess | null = null;
let sender: LldpSender | null = null;
let bmcDir = '';
let nodeUuid = '';
/** What the agent posted to /v1/continue, as the inspector kept it (everything but `logs`). */
let posted: Record<string, unknown> | null = null;

// ---------------------------------------------------------------------------------------- helpers

async function agentLog(): Promise<LogLine[]> {
  return agent ? await agent.logLines() : [];
}

async function diagnostics(): Promise<string> {
  const lines = (await agent?.log().catch(() => ''))?.split('\n').slice(-40).join('\n') ?? '';
  return [
    `--- agent log (last lines)\n${lines}`,
    ironic ? await ironic.tail('ironic-inspector', 60) : '',
    ironic ? await ironic.tail('ironic-conductor', 30) : '',
  ].join('\n');
}

/** Waits for an agent log line (from index `from` on) that matches. */
function waitForAgentLog(what: string, match: (l: LogLine) => boolean, timeoutMs: number, from = 0): Promise<LogLine> {
  return agent!.waitForLog(what, match, { timeoutMs, from, diagnostics });
}

function waitForState(state: string): Promise<IronicNode> {
  return ironic!.api.waitForProvisionState(nodeUuid, state, { timeoutMs: STATE_TIMEOUT_MS, onFailure: diagnostics });
}

/** The simulated BMC's ipmitool: channel 1 is the LAN channel, as `ipmitool lan print 1` prints it. */
const IPMITOOL_STUB = `#!/bin/sh
# Stand-in for ipmitool talking to the BMC of the simulated machine (test/ironic/inspection.test.ts).
case "$*" in
  "lan print 1") cat <<EOF
Set in Progress         : Set Complete
IP Address Source       : Static Address
IP Address              : ${BMC_IP}
Subnet Mask             : 255.255.255.0
MAC Address             : ${BMC_MAC}
Default Gateway IP      : 198.51.100.1
802.1q VLAN ID          : Disabled
EOF
  ;;
  "lan6 print 1") echo "IPv6 Dynamic Address 0:"; echo "    Address: ::/0" ;;
  *) echo "Invalid channel $3" >&2; exit 1 ;;
esac
`;

// Runs inside `unshare --mount --propagation private`: a tmpfs for the overlay's upper layer, /dev
// overlaid so that an ipmi0 entry exists for this process only, then the agent. $1 = bmcDir.
const BMC_NAMESPACE_SCRIPT = `
d="$1"; shift
mount -t tmpfs ferrum-bmc "$d/mnt"
mkdir "$d/mnt/upper" "$d/mnt/work"
mount -t overlay ferrum-bmc-dev -o "lowerdir=/dev,upperdir=$d/mnt/upper,workdir=$d/mnt/work" /dev
: > /dev/ipmi0
exec "$@"
`;

/** Ground truth about this machine, read independently of the agent. */
async function machineFacts(): Promise<{ cpus: number; arch: string; memTotal: number }> {
  const lscpu = (await sh('lscpu', [])).stdout;
  const cpus = Number(/^CPU\(s\):\s+(\d+)$/m.exec(lscpu)?.[1]);
  const arch = (await sh('uname', ['-m'])).stdout.trim();
  const kb = Number(/^MemTotal:\s+(\d+) kB$/m.exec((await sh('cat', ['/proc/meminfo'])).stdout)?.[1]);
  return { cpus, arch, memTotal: kb * 1024 };
}

/** Ironic keeps properties as the inspector sent them (strings): compare as numbers. */
const num = (v: unknown) => Number(v);

// ------------------------------------------------------------------------------------ lifecycle

/** If the test process exits without afterAll: end the agent and the sender, free the disk. */
function emergencyCleanup(): void {
  for (const p of [agent?.proc, sender?.proc]) if (p && p.exitCode === null) p.kill('SIGKILL');
  // The overlay and its tmpfs lived in the agent's own mount namespace: only the empty dirs are left.
  if (bmcDir) rmSync(bmcDir, { recursive: true, force: true });
  disk?.detachNow();
}

async function setUp(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the inspection test needs root (network namespaces, loop devices, mount namespaces)');
  await assertIronicInstalled();
  await assertInspectorInstalled();
  for (const tool of ['ip', 'losetup', 'unshare', 'mount', 'python3', 'tcpdump', 'tar']) {
    if ((await sh('sh', ['-c', `command -v ${tool}`])).code !== 0) throw new Error(`${tool} is missing: run scripts/install-deps.sh`);
  }
  if ((await sh('grep', ['-qw', 'overlay', '/proc/filesystems'])).code !== 0) {
    throw new Error('the kernel has no overlay filesystem (modprobe overlay): needed for the simulated BMC');
  }

  ns = await createNetNamespace();
  ironic = await IronicServer.start({
    bindAddr: ns.nsAddr,
    execPrefix: ns.execPrefix,
    inspector: true,
    // Cleaning after inspection only wipes metadata: shredding 8 GiB would take minutes.
    eraseDevicesPriority: 0,
  });
  disk = await createLoopDevice(DISK_MIB);

  bmcDir = await mkdtemp(join(tmpdir(), 'ferrum-bmc-'));
  await mkdir(join(bmcDir, 'bin'));
  await mkdir(join(bmcDir, 'mnt'));
  await writeFile(join(bmcDir, 'bin', 'ipmitool'), IPMITOOL_STUB);
  await chmod(join(bmcDir, 'bin', 'ipmitool'), 0o755);
}

async function tearDown({ step, keep }: Teardown): Promise<void> {
  const agentDir = agent ? dirname(agent.logFile) : null;
  await step(async () => sender?.stop());
  await step(async () => agent?.stop());
  await step(async () => ironic?.stop());
  await step(async () => disk?.destroy());
  await step(async () => ns?.destroy());
  if (keep) {
    console.error(`kept for inspection: agent ${agentDir ?? '-'}, Ironic + inspector ${ironic?.stateDir ?? '-'}`);
  } else {
    await step(async () => agentDir && rm(agentDir, { recursive: true, force: true }));
    await step(async () => ironic?.removeStateDir());
  }
  await step(async () => bmcDir && rm(bmcDir, { recursive: true, force: true }));
}

suiteLifecycle({ setUp, tearDown, emergency: emergencyCleanup });

// ---------------------------------------------------------------------------------------- tests

describe('in-band inspection: Ironic 21.4.4 + ironic-inspector 11.1 + the Ferrum agent', () => {
  test('(a) a portless node goes to `inspect wait`; the inspector will look it up by BMC address', async () => {
    const node = await ironic!.api.createNode({
      name: `ferrum-inspect-${ns!.name}`,
      inspectInterface: 'inspector',
      driverInfo: { ipmi_address: BMC_IP },
      properties: ENROLLED,
    });
    nodeUuid = node.uuid;
    expect(node.inspect_interface).toBe('inspector');
    expect(await ironic!.api.listPorts(nodeUuid)).toEqual([]);
    await ironic!.api.setProvisionState(nodeUuid, 'manage');
    await waitForState('manageable');

    await ironic!.api.setProvisionState(nodeUuid, 'inspect');
    await waitForState('inspect wait');
    // The inspector took the node (fake boot: it set PXE and rebooted through Ironic's fake power).
    const status = await ironic!.inspector.waitForState(nodeUuid, 'waiting', { timeoutMs: 60_000, onFailure: diagnostics });
    expect(status).toMatchObject({ finished: false, error: null });
    const log = await ironic!.inspectorLog();
    expect(log).toContain(`The following attributes will be used for look up: {'bmc_address': ['${BMC_IP}']}`);
    expect(log).toContain('Introspection started successfully');
  });

  test('(b) the agent posts its data; the inspector accepts it and the node ends manageable with our inventory', async () => {
    const { frame, tlvs } = buildLldpFrame();
    sender = await startLldpSender({ ifname: ns!.nsIf, frame, execPrefix: ns!.execPrefix, intervalSec: 1, durationSec: 600 });
    const port = await freePort();
    agent = await startAgent({
      host: ns!.hostAddr,
      port,
      wrapper: ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-ec', BMC_NAMESPACE_SCRIPT, 'ferrum-bmc', bmcDir],
      env: { PATH: `${join(bmcDir, 'bin')}:${process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` },
      args: [
        '--inspection-callback-url', `${ironic!.inspectorUrl}/v1/continue`,
        '--inspection-collectors', 'default,logs,pci-devices',
        '--api-url', ironic!.apiUrl,
        '--advertise-port', String(port),
        '--interfaces', ns!.hostIf,
        '--bootif', BOOTIF(),
        '--devices', disk!.path,
        '--collect-lldp',
        '--lldp-timeout', '20',
        '--power', 'none',
        '--lookup-timeout', '900',
        '--lookup-max-interval', '2',
        '--cmdline-file', '/dev/null',
        '--debug',
      ],
    });

    const accepted = await waitForAgentLog('inspection data accepted', (l) => l.msg === 'inspection data accepted', 90_000);
    expect(accepted['node']).toBe(nodeUuid);
    const collected = (await agentLog()).find((l) => l.msg === 'inspection data collected')!;
    expect(collected['error']).toBeNull();
    expect((await agentLog()).filter((l) => /inspection (data was rejected|callback failed)|could not deliver/.test(l.msg ?? ''))).toEqual([]);

    const done = await waitForState('manageable');
    expect(done.last_error).toBeNull();
    expect(await ironic!.inspector.status(nodeUuid)).toMatchObject({ state: 'finished', finished: true, error: null });

    // The agent's own report, as it posted it; checked against this machine read independently.
    posted = await ironic!.inspector.unprocessedData(nodeUuid);
    const inv = posted['inventory'] as Inventory;
    const facts = await machineFacts();
    expect(inv.cpu.count).toBe(facts.cpus);
    expect(inv.cpu.architecture).toBe(facts.arch);
    expect(inv.memory.total).toBe(facts.memTotal);
    expect(inv.bmc_address).toBe(BMC_IP);
    const rootDisk = inv.disks.find((d) => d.name === disk!.path)!;
    expect(rootDisk.size).toBe(disk!.sizeBytes);
    expect(posted['root_disk']).toEqual(rootDisk);

    // The scheduler properties came from that inventory (the inspector sends them as strings).
    const props = done.properties;
    expect(num(props['cpus'])).toBe(inv.cpu.count);
    expect(props['cpu_arch']).toBe(inv.cpu.architecture);
    expect(num(props['local_gb'])).toBe(Math.floor(rootDisk.size / GiB) - 1);
    expect(num(props['local_gb'])).toBe(DISK_MIB / 1024 - 1);
    if (inv.memory.physical_mb !== null) {
      expect(num(props['memory_mb'])).toBe(inv.memory.physical_mb);
    } else {
      // ironic-inspector 11.1 takes memory_mb from physical_mb only (never from total): without
      // SMBIOS memory devices (a VM without DMI tables) it keeps the enrolled value and says why.
      expect(num(props['memory_mb'])).toBe(ENROLLED.memory_mb);
      expect(await ironic!.inspectorLog()).toMatch(/malformed or missing memory information/);
    }
    // The capabilities hook maps CPU flags ([capabilities]boot_mode is off by default).
    const flagCaps: Record<string, string> = { vmx: 'cpu_vt', svm: 'cpu_vt', aes: 'cpu_aes', pse: 'cpu_hugepages', pdpe1gb: 'cpu_hugepages_1g', smx: 'cpu_txt' };
    const expectedCaps = new Set(Object.entries(flagCaps).filter(([flag]) => inv.cpu.flags.includes(flag)).map(([, cap]) => `${cap}:true`));
    expect(new Set(String(props['capabilities'] ?? '').split(',').filter(Boolean))).toEqual(expectedCaps);

    // The port: created from our NIC (add_ports=all), PXE-enabled because BOOTIF named it, and
    // local_link_connection from the LLDP TLVs we reported.
    const ports = await ironic!.api.listPorts(nodeUuid);
    expect(ports.map((p) => p.address)).toEqual([ns!.hostMac]);
    expect(ports[0]!.pxe_enabled).toBe(true);
    expect(ports[0]!.local_link_connection).toEqual({ switch_id: DEFAULT_SWITCH.chassisMac, port_id: DEFAULT_SWITCH.portName });
    expect(inv.interfaces.find((i) => i.name === ns!.hostIf)!.lldp).toEqual(tlvs);
  });

  test('(c) the inspector stored our data in the expected shape; Ironic keeps a copy', async () => {
    expect(posted, 'needs (b)').not.toBeNull();
    const sent = posted!['inventory'] as Inventory;
    // Exactly the keys IPA 9.4.3's collectors default, logs and pci-devices send (`logs` is not kept).
    expect(Object.keys(posted!).sort()).toEqual(['boot_interface', 'configuration', 'error', 'inventory', 'pci_devices', 'root_disk']);
    expect(posted!['error']).toBeNull();
    expect(posted!['boot_interface']).toBe(BOOTIF());
    expect(posted!['configuration']).toEqual({
      collectors: ['default', 'logs', 'pci-devices'],
      managers: [{ name: 'generic_hardware_manager', version: '1.1' }],
    });
    expect(Object.keys(sent).sort()).toEqual(['bmc_address', 'bmc_mac', 'bmc_v6address', 'boot', 'cpu', 'disks', 'hostname', 'interfaces', 'memory', 'system_vendor']);
    expect(sent).toMatchObject({ bmc_address: BMC_IP, bmc_mac: BMC_MAC, bmc_v6address: '::/0' });
    expect(sent.boot.pxe_interface).toBe(BOOTIF());
    expect(sent.interfaces).toHaveLength(1);
    expect(sent.interfaces[0]).toMatchObject({ name: ns!.hostIf, mac_address: ns!.hostMac, ipv4_address: ns!.hostAddr, has_carrier: true });
    expect(sent.interfaces[0]!.lldp).toEqual(buildLldpFrame().tlvs);
    expect(sent.disks.map((d) => d.name)).toEqual([disk!.path]);
    expect(Array.isArray(posted!['pci_devices'])).toBe(true);
    for (const p of posted!['pci_devices'] as Array<Record<string, unknown>>) {
      expect(p).toMatchObject({ bus: expect.stringMatching(/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/), vendor_id: expect.stringMatching(/^[0-9a-f]{4}$/) });
    }

    // The processed data: what the inspector's hooks made of it.
    const data = await ironic!.inspector.data(nodeUuid);
    expect(data['error']).toBeNull();
    expect(data['logs'], 'the inspector never stores `logs` in its database (it writes them to ramdisk_logs_dir)').toBeUndefined();
    expect(data).toMatchObject({
      cpus: sent.cpu.count,
      cpu_arch: sent.cpu.architecture,
      local_gb: DISK_MIB / 1024 - 1,
      ipmi_address: BMC_IP,
      macs: [ns!.hostMac],
      boot_interface: BOOTIF(),
    });
    if (sent.memory.physical_mb !== null) expect(data['memory_mb']).toBe(sent.memory.physical_mb);
    const iface = (data['all_interfaces'] as Record<string, Record<string, unknown>>)[ns!.hostIf]!;
    expect(iface).toMatchObject({ ip: ns!.hostAddr, mac: ns!.hostMac, pxe: true });
    expect(iface['lldp_processed']).toMatchObject({
      switch_chassis_id: DEFAULT_SWITCH.chassisMac,
      switch_port_id: DEFAULT_SWITCH.portName,
      switch_port_description: DEFAULT_SWITCH.portDescription,
      switch_system_name: DEFAULT_SWITCH.systemName,
      switch_port_untagged_vlan_id: DEFAULT_SWITCH.vlan,
      switch_port_mtu: DEFAULT_SWITCH.mtu,
    });

    // The `logs` collector's tarball, as the inspector saved it.
    const files = (await readdir(ironic!.inspectorLogsDir)).filter((f) => f.startsWith(`${nodeUuid}_`) && f.endsWith('.tar.gz'));
    expect(files).toHaveLength(1);
    const tarball = join(ironic!.inspectorLogsDir, files[0]!);
    const entries = (await sh('tar', ['-tzf', tarball])).stdout.split('\n').filter(Boolean);
    expect(entries).toEqual(expect.arrayContaining(['ferrum-agent.log', 'journal', 'dmesg', 'ip_addr', 'lsblk', 'lshw']));
    expect((await sh('tar', ['-xzOf', tarball, 'ferrum-agent.log'])).stdout).toContain('LLDP frame received');

    // Ironic fetched the processed data when inspection finished (API 1.81 node inventory).
    const stored = await ironic!.api.nodeInventory(nodeUuid);
    expect(stored.inventory).toEqual(JSON.parse(JSON.stringify(sent)));
    expect(stored.plugin_data).toMatchObject({ macs: [ns!.hostMac], local_gb: data['local_gb'], ipmi_address: BMC_IP });
  });

  test('(d) the agent carries on to lookup with the node UUID; after `provide` Ironic looks it up and cleans', async () => {
    // Inspection powered the node off (fake power): the agent was not told and went on to look up
    // with the UUID the inspector answered. `inspect wait` allows lookup, so it may have got a
    // token before Ironic saw the inspection finish; its heartbeats in `manageable` are ignored.
    const withUuid = async () => (await ironic!.apiLog()).split('\n').filter((l) => l.includes('GET /v1/lookup?') && l.includes(`node_uuid=${nodeUuid}`));
    const deadline = Date.now() + 30_000;
    while ((await withUuid()).length === 0) {
      if (Date.now() > deadline) throw new Error(`no lookup with node_uuid=${nodeUuid} reached Ironic in 30 s\n${await diagnostics()}`);
      await sleep(300);
    }
    const lookups = await withUuid();
    expect(lookups[0]).toContain(`addresses=${encodeURIComponent(ns!.hostMac)}`);
    expect(lookups.every((l) => / status: (200|404) /.test(l))).toBe(true);
    expect(await ironic!.inspectorLog()).toMatch(/Node powered-off/);
    expect(agent!.proc.exitCode).toBeNull();
    expect((await agentLog()).filter((l) => l.msg === 'agent failed')).toEqual([]);

    const mark = (await agentLog()).length;
    await ironic!.api.setProvisionState(nodeUuid, 'provide');
    const lookup = await waitForAgentLog('lookup succeeded', (l) => l.msg === 'lookup succeeded', 90_000, mark);
    expect(lookup['node']).toBe(nodeUuid);
    const done = await waitForState('available');
    expect(done.last_error).toBeNull();
    const log = (await agentLog()).slice(mark);
    expect(log.filter((l) => l.msg === 'command clean.execute_clean_step done' && l['status'] === 'SUCCEEDED')).toHaveLength(1);
    expect(log.filter((l) => l.msg === 'wiping signatures').map((l) => l['device'])).toContain(disk!.path);
    // Ironic reached the agent through the port the inspector created.
    expect((await ironic!.api.listPorts(nodeUuid)).map((p) => p.address)).toEqual([ns!.hostMac]);
    expect(agent!.proc.exitCode).toBeNull();
  });
});
