// A real Ironic (Debian's ironic-conductor + ironic-api, split mode over json-rpc) for conformance
// tests: SQLite in a temporary directory, fake-hardware, noauth, direct deploy, automated cleaning,
// short timeouts. It runs inside a network namespace bound to the namespace's address, so the
// agent reaches it over a real link. With `inspector: true` it also runs Debian's ironic-inspector
// 11.1 (standalone: API and conductor in one process, SQLite, fake:// transport, no PXE filter,
// add_ports=all) on the same address, port 5050, and enables Ironic's `inspector` inspect
// interface pointing at it. stop() ends exactly the processes start() spawned and the workers
// they forked. IronicApi and InspectorApi are small typed clients of the REST APIs.
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { sh } from './loop-device.js';

export const INSTALL_HINT = 'run scripts/install-deps.sh as root to install the Debian ironic-api/ironic-conductor packages';

/** Throws a clear error when the Ironic packages are missing (the tests must not skip silently). */
export async function assertIronicInstalled(): Promise<void> {
  const missing: string[] = [];
  for (const cmd of ['ironic-api', 'ironic-conductor', 'ironic-dbsync']) {
    if ((await sh('sh', ['-c', `command -v ${cmd}`])).code !== 0) missing.push(cmd);
  }
  if (missing.length > 0) throw new Error(`Ironic is not installed (missing ${missing.join(', ')}): ${INSTALL_HINT}`);
}

/** Same for ironic-inspector (Debian package ironic-inspector, 11.1.x). */
export async function assertInspectorInstalled(): Promise<void> {
  const missing: string[] = [];
  for (const cmd of ['ironic-inspector', 'ironic-inspector-dbsync']) {
    if ((await sh('sh', ['-c', `command -v ${cmd}`])).code !== 0) missing.push(cmd);
  }
  if (missing.length > 0) {
    throw new Error(`ironic-inspector is not installed (missing ${missing.join(', ')}): run scripts/install-deps.sh as root`);
  }
}

export interface IronicOptions {
  /** Address inside the namespace to bind the API and json-rpc to. */
  bindAddr: string;
  /** Prefix that runs a command inside the namespace (`ip netns exec NAME`). */
  execPrefix: string[];
  apiPort?: number;
  rpcPort?: number;
  /** [api]ramdisk_heartbeat_timeout: sent to the agent as config.heartbeat_timeout. */
  ramdiskHeartbeatTimeout?: number;
  /** Deploy/clean callback timeouts. */
  callbackTimeout?: number;
  startTimeoutMs?: number;
  /** Also start ironic-inspector and enable the `inspector` inspect interface (default false). */
  inspector?: boolean;
  inspectorPort?: number;
  /**
   * ironic-inspector [processing]processing_hooks. The default is the inspector's defaults plus
   * lldp_basic and local_link_connection (LLDP → port local_link_connection).
   */
  inspectorHooks?: string;
  /** [deploy]erase_devices_priority (e.g. 0: automated cleaning only wipes metadata). Unset: the agent's. */
  eraseDevicesPriority?: number | null;
  /**
   * Enables the `agent` rescue interface. Rescue validates the boot interface's rescue support
   * unless [agent]manage_agent_boot is off, and fake boot has none: this turns it off too (the
   * tests start the agent themselves anyway).
   */
  rescue?: boolean;
}

type ServiceName = 'ironic-conductor' | 'ironic-api' | 'ironic-inspector';

interface Tracked {
  proc: ChildProcess;
  pid: number;
  exited: Promise<void>;
}

/** pid → (ppid, start time) for every process, from /proc. */
function processTable(): Map<number, { ppid: number; start: string }> {
  const table = new Map<number, { ppid: number; start: string }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // comm (field 2) may contain spaces and parentheses: split after the last ')'.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      table.set(Number(entry), { ppid: Number(rest[1]), start: rest[19] ?? '' });
    } catch {
      // exited meanwhile
    }
  }
  return table;
}

/** All descendants of `pid` with their start times (so a recycled pid is never signalled). */
function descendants(pid: number): Array<{ pid: number; start: string }> {
  const table = processTable();
  const out: Array<{ pid: number; start: string }> = [];
  const queue = [pid];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    for (const [p, info] of table) {
      if (info.ppid === parent) {
        out.push({ pid: p, start: info.start });
        queue.push(p);
      }
    }
  }
  return out;
}

function startTimeOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: 1000 });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}

/** Environment for Ironic: no proxies (the conductor must reach the agent directly). */
function ironicEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/_proxy$/i.test(k)) env[k] = v;
  env['NO_PROXY'] = '*';
  env['no_proxy'] = '*';
  env['PATH'] = `/usr/sbin:/usr/bin:/sbin:/bin${env['PATH'] ? `:${env['PATH']}` : ''}`;
  return env;
}

export class IronicServer {
  readonly apiUrl: string;
  readonly confFile: string;
  readonly api: IronicApi;
  /** http://<bind>:5050 when started with `inspector: true`, else null. */
  readonly inspectorUrl: string | null;
  readonly inspectorConfFile: string;
  /** Where ironic-inspector stores the `logs` the ramdisk sent (one tar.gz per run). */
  readonly inspectorLogsDir: string;
  private readonly procs = new Map<ServiceName, Tracked>();
  private readonly exitHook = () => this.killAllSync();

  private constructor(
    readonly stateDir: string,
    private readonly o: Required<IronicOptions>,
  ) {
    this.apiUrl = `http://${o.bindAddr}:${o.apiPort}`;
    this.confFile = join(stateDir, 'ironic.conf');
    this.api = new IronicApi(this.apiUrl);
    this.inspectorUrl = o.inspector ? `http://${o.bindAddr}:${o.inspectorPort}` : null;
    this.inspectorConfFile = join(stateDir, 'inspector.conf');
    this.inspectorLogsDir = join(stateDir, 'inspector-ramdisk-logs');
  }

  /** The ironic-inspector client; throws if the server was started without it. */
  get inspector(): InspectorApi {
    if (!this.inspectorUrl) throw new Error('IronicServer was started without ironic-inspector (inspector: true)');
    return new InspectorApi(this.inspectorUrl);
  }

  /** Writes the configuration, creates the database and starts conductor and API. */
  static async start(opts: IronicOptions): Promise<IronicServer> {
    await assertIronicInstalled();
    if (opts.inspector) await assertInspectorInstalled();
    const o: Required<IronicOptions> = {
      apiPort: 6385,
      rpcPort: 8089,
      ramdiskHeartbeatTimeout: 10,
      callbackTimeout: 180,
      startTimeoutMs: 120_000,
      inspector: false,
      inspectorPort: 5050,
      inspectorHooks: '$default_processing_hooks,lldp_basic,local_link_connection',
      eraseDevicesPriority: null,
      rescue: false,
      ...opts,
    };
    const stateDir = await mkdtemp(join(tmpdir(), 'ferrum-ironic-'));
    const server = new IronicServer(stateDir, o);
    process.once('exit', server.exitHook);
    try {
      await server.writeConfig();
      await server.createSchema();
      await server.startService('ironic-conductor');
      await server.waitFor('conductor json-rpc', 'ironic-conductor', () => portOpen(o.bindAddr, o.rpcPort));
      await server.startApi();
      if (o.inspector) await server.startInspector();
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  logFile(name: ServiceName): string {
    return join(this.stateDir, `${name}.log`);
  }

  /** The last `lines` lines of a service's log (and its stdout/stderr), for failure messages. */
  async tail(name: ServiceName, lines = 60): Promise<string> {
    const parts: string[] = [];
    for (const f of [this.logFile(name), join(this.stateDir, `${name}.out`)]) {
      const text = await readFile(f, 'utf8').catch(() => '');
      if (text.trim()) parts.push(`--- ${f}\n${text.split('\n').slice(-lines).join('\n')}`);
    }
    return parts.join('\n');
  }

  async conductorLog(): Promise<string> {
    return readFile(this.logFile('ironic-conductor'), 'utf8').catch(() => '');
  }

  async apiLog(): Promise<string> {
    return readFile(this.logFile('ironic-api'), 'utf8').catch(() => '');
  }

  async inspectorLog(): Promise<string> {
    return readFile(this.logFile('ironic-inspector'), 'utf8').catch(() => '');
  }

  /** Starts ironic-api and waits until it lists fake-hardware (i.e. sees the conductor). */
  async startApi(): Promise<void> {
    await this.startService('ironic-api');
    await this.waitFor('API with fake-hardware', 'ironic-api', async () => {
      try {
        return (await this.api.driverNames()).includes('fake-hardware');
      } catch {
        return false;
      }
    });
  }

  /** Stops ironic-api only (its parent and its workers); the conductor keeps running. */
  async stopApi(): Promise<void> {
    await this.stopService('ironic-api');
  }

  isRunning(name: ServiceName): boolean {
    const t = this.procs.get(name);
    return t !== undefined && t.proc.exitCode === null && t.proc.signalCode === null;
  }

  /** Stops everything this server started. Safe to call more than once. */
  async stop(): Promise<void> {
    await this.stopService('ironic-inspector');
    await this.stopService('ironic-api');
    await this.stopService('ironic-conductor');
    await this.api.close();
    process.removeListener('exit', this.exitHook);
  }

  /** Deletes the state directory (database, logs, certificates); call after stop(). */
  async removeStateDir(): Promise<void> {
    if (this.procs.size > 0) throw new Error('stop Ironic before removing its state directory');
    await rm(this.stateDir, { recursive: true, force: true });
  }

  private async writeConfig(): Promise<void> {
    const d = this.stateDir;
    const o = this.o;
    for (const sub of ['tmp', 'locks', 'certificates', 'deploy-logs', 'httpboot']) await mkdir(join(d, sub), { recursive: true });
    const conf = `# Written by test/helpers/ironic.ts for one test run.
[DEFAULT]
debug = true
auth_strategy = noauth
rpc_transport = json-rpc
# With json-rpc the API reaches the conductor at its "host": it must be an address.
host = ${o.bindAddr}
my_ip = ${o.bindAddr}
state_path = ${d}
tempdir = ${d}/tmp
use_stderr = false
minimum_memory_warning_only = true
hash_ring_reset_interval = 5
enabled_hardware_types = fake-hardware
enabled_boot_interfaces = fake
default_boot_interface = fake
enabled_deploy_interfaces = direct,fake
default_deploy_interface = direct
enabled_power_interfaces = fake
default_power_interface = fake
enabled_management_interfaces = fake
default_management_interface = fake
enabled_network_interfaces = noop
default_network_interface = noop
enabled_inspect_interfaces = ${o.inspector ? 'no-inspect,inspector' : 'no-inspect'}
default_inspect_interface = no-inspect
enabled_rescue_interfaces = ${o.rescue ? 'no-rescue,agent' : 'no-rescue'}
default_rescue_interface = no-rescue
enabled_raid_interfaces = no-raid
default_raid_interface = no-raid
enabled_bios_interfaces = no-bios
default_bios_interface = no-bios
enabled_console_interfaces = no-console
default_console_interface = no-console
enabled_vendor_interfaces = no-vendor
default_vendor_interface = no-vendor
enabled_storage_interfaces = noop
default_storage_interface = noop

[api]
host_ip = ${o.bindAddr}
port = ${o.apiPort}
api_workers = 1
ramdisk_heartbeat_timeout = ${o.ramdiskHeartbeatTimeout}

[json_rpc]
auth_strategy = noauth
host_ip = ${o.bindAddr}
port = ${o.rpcPort}

[database]
connection = sqlite:///${d}/ironic.sqlite

[oslo_concurrency]
lock_path = ${d}/locks

[conductor]
automated_clean = true
heartbeat_interval = 2
heartbeat_timeout = 20
check_provision_state_interval = 5
deploy_callback_timeout = ${o.callbackTimeout}
clean_callback_timeout = ${o.callbackTimeout}
rescue_callback_timeout = ${o.callbackTimeout}
power_state_change_timeout = 10
sync_power_state_interval = 60

[deploy]
fast_track = false
http_url = http://${o.bindAddr}:8088
http_root = ${d}/httpboot
${o.eraseDevicesPriority === null ? '' : `erase_devices_priority = ${o.eraseDevicesPriority}\n`}
[agent]
manage_agent_boot = ${o.rescue ? 'false' : 'true'}
require_tls = false
certificates_path = ${d}/certificates
command_timeout = 30
command_wait_interval = 1
command_wait_attempts = 60
max_command_attempts = 2
post_deploy_get_power_state_retries = 2
post_deploy_get_power_state_retry_interval = 1
deploy_logs_collect = on_failure
deploy_logs_storage_backend = local
deploy_logs_local_path = ${d}/deploy-logs
image_download_source = http

[service_catalog]
auth_type = none
endpoint_override = http://${o.bindAddr}:${o.apiPort}
${o.inspector ? this.ironicInspectorSection() : ''}`;
    await writeFile(this.confFile, conf);
  }

  /** Ironic's side: where the inspector is, and that Ironic polls it every 5 s for the result. */
  private ironicInspectorSection(): string {
    return `
[inspector]
endpoint_override = ${this.inspectorUrl}
auth_type = none
callback_endpoint_override = ${this.inspectorUrl}
status_check_period = 5
# Only used when Ironic manages the inspection boot (fake boot cannot): the inspector powers off.
power_off = false
`;
  }

  /** ironic-inspector 11.1 standalone, as /work/shared/ironic-harness/inspector.sh runs it. */
  private async writeInspectorConfig(): Promise<void> {
    const d = this.stateDir;
    const o = this.o;
    await mkdir(this.inspectorLogsDir, { recursive: true });
    const conf = `# Written by test/helpers/ironic.ts for one test run.
[DEFAULT]
debug = true
auth_strategy = noauth
listen_address = ${o.bindAddr}
listen_port = ${o.inspectorPort}
host = ${o.bindAddr}
# API and conductor in one process, talking in-process: no RabbitMQ.
standalone = true
transport_url = fake://
# Ironic's fake boot cannot boot a ramdisk itself: the inspector sets PXE and reboots (fake power).
can_manage_boot = true
timeout = ${o.callbackTimeout}
clean_up_period = 10
introspection_delay = 0
use_stderr = false

[database]
connection = sqlite:///${d}/inspector.sqlite

[ironic]
auth_type = none
endpoint_override = ${this.apiUrl}

[pxe_filter]
driver = noop

[processing]
store_data = database
# Every NIC in the inventory becomes a port, with or without an IP address.
add_ports = all
keep_ports = all
processing_hooks = ${o.inspectorHooks}
ramdisk_logs_dir = ${this.inspectorLogsDir}
always_store_ramdisk_logs = true
power_off = true

[oslo_concurrency]
lock_path = ${d}/locks
`;
    await writeFile(this.inspectorConfFile, conf);
  }

  /** Writes the inspector's configuration, migrates its database, starts it and waits for its API. */
  private async startInspector(): Promise<void> {
    await this.writeInspectorConfig();
    const res = await sh('ironic-inspector-dbsync', ['--config-file', this.inspectorConfFile, 'upgrade']);
    if (res.code !== 0) throw new Error(`ironic-inspector-dbsync upgrade failed:\n${res.stderr}${res.stdout}`);
    await this.startService('ironic-inspector');
    await this.waitFor('ironic-inspector API', 'ironic-inspector', async () => {
      try {
        return (await fetch(`${this.inspectorUrl}/`, { signal: AbortSignal.timeout(3000) })).ok;
      } catch {
        return false;
      }
    });
  }

  private async createSchema(): Promise<void> {
    const res = await sh('ironic-dbsync', ['--config-file', this.confFile, 'create_schema']);
    if (res.code !== 0) throw new Error(`ironic-dbsync create_schema failed:\n${res.stderr}${res.stdout}`);
  }

  private async startService(name: ServiceName): Promise<void> {
    if (this.isRunning(name)) return;
    const out = openSync(join(this.stateDir, `${name}.out`), 'a');
    const conf = name === 'ironic-inspector' ? this.inspectorConfFile : this.confFile;
    const argv = [...this.o.execPrefix, name, '--config-file', conf, '--log-file', this.logFile(name)];
    // detached: own session, so a signal aimed at the test runner's group does not reach it and
    // we stop it deliberately. `ip netns exec` execs the service, so proc.pid is the service.
    const proc = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', out, out], env: ironicEnv() });
    closeSync(out);
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.once('error', () => undefined);
    if (proc.pid === undefined) throw new Error(`could not start ${name}`);
    this.procs.set(name, { proc, pid: proc.pid, exited });
  }

  private async stopService(name: ServiceName): Promise<void> {
    const t = this.procs.get(name);
    if (!t) return;
    this.procs.delete(name);
    const workers = descendants(t.pid);
    if (t.proc.exitCode === null && t.proc.signalCode === null) {
      t.proc.kill('SIGTERM');
      const stopped = await Promise.race([t.exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!stopped) {
        t.proc.kill('SIGKILL');
        await t.exited;
      }
    }
    // Workers the parent forked may outlive it for a moment: end those that are still ours.
    for (const w of workers) {
      const alive = () => startTimeOf(w.pid) === w.start;
      if (!alive()) continue;
      try {
        process.kill(w.pid, 'SIGTERM');
      } catch {
        continue;
      }
      for (let i = 0; i < 20 && alive(); i++) await sleep(250);
      if (alive()) {
        try {
          process.kill(w.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
  }

  private killAllSync(): void {
    for (const t of this.procs.values()) {
      for (const w of descendants(t.pid)) {
        try {
          process.kill(w.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      try {
        process.kill(t.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }

  private async waitFor(what: string, service: ServiceName, probe: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + this.o.startTimeoutMs;
    for (;;) {
      if (await probe()) return;
      if (!this.isRunning(service)) {
        throw new Error(`${service} exited while waiting for ${what}:\n${await this.tail(service)}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${this.o.startTimeoutMs} ms waiting for ${what}:\n${await this.tail(service)}`);
      }
      await sleep(250);
    }
  }

  /**
   * A node's driver_internal_info straight from the database, unmasked (the API shows the agent
   * token as "******"): lets a test tell one token from the next.
   */
  async internalInfoFromDb(nodeUuid: string): Promise<Record<string, unknown>> {
    const script =
      'import json, sqlite3, sys\n' +
      'db = sqlite3.connect(sys.argv[1], timeout=10)\n' +
      'row = db.execute("SELECT driver_internal_info FROM nodes WHERE uuid = ?", (sys.argv[2],)).fetchone()\n' +
      'print(row[0] if row and row[0] else "{}")\n';
    const res = await sh('/usr/bin/python3', ['-c', script, join(this.stateDir, 'ironic.sqlite'), nodeUuid]);
    if (res.code !== 0) throw new Error(`reading the node from the database failed: ${res.stderr}`);
    return JSON.parse(res.stdout) as Record<string, unknown>;
  }
}

// ------------------------------------------------------------------------------------------------
// REST client

export interface IronicNode {
  uuid: string;
  name: string | null;
  provision_state: string;
  target_provision_state: string | null;
  power_state: string | null;
  maintenance: boolean;
  last_error: string | null;
  clean_step: Record<string, unknown> | null;
  driver_internal_info: Record<string, unknown>;
  driver_info: Record<string, unknown>;
  properties: Record<string, unknown>;
  [key: string]: unknown;
}

export interface IronicPort {
  uuid: string;
  address: string;
  node_uuid: string;
  pxe_enabled?: boolean;
  local_link_connection?: Record<string, unknown>;
  extra?: Record<string, unknown>;
  [key: string]: unknown;
}

export class IronicHttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    what: string,
  ) {
    super(`${what} answered ${status}: ${body.slice(0, 1000)}`);
    this.name = 'IronicHttpError';
  }
}

export type ProvisionTarget = 'manage' | 'provide' | 'clean' | 'deploy' | 'active' | 'deleted' | 'abort' | 'inspect' | 'adopt' | 'rescue' | 'unrescue';

export interface CreateNodeOptions {
  name?: string;
  deployInterface?: string;
  /** e.g. `inspector` (the server must run with `inspector: true`); Ironic's default otherwise. */
  inspectInterface?: string;
  /** e.g. `agent` (the server must run with `rescue: true`). */
  rescueInterface?: string;
  properties?: Record<string, unknown>;
  driverInfo?: Record<string, unknown>;
}

export class IronicApi {
  constructor(readonly url: string) {}

  private async call<T>(method: string, path: string, body?: unknown, ok: number[] = [200]): Promise<T> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: {
        'X-OpenStack-Ironic-API-Version': 'latest',
        accept: 'application/json',
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? null : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    if (!ok.includes(res.status)) throw new IronicHttpError(res.status, text, `${method} ${path}`);
    return (text ? JSON.parse(text) : null) as T;
  }

  async driverNames(): Promise<string[]> {
    const res = await this.call<{ drivers: Array<{ name: string }> }>('GET', '/v1/drivers');
    return res.drivers.map((d) => d.name);
  }

  /**
   * A fake-hardware node. vendor=lenovo: fake management only accepts boot device "pxe", and
   * Ironic 21.4 skips setting the "disk" boot device for Lenovo nodes in UEFI mode, which a
   * direct deploy would otherwise ask for.
   */
  createNode(o: CreateNodeOptions = {}): Promise<IronicNode> {
    return this.call<IronicNode>(
      'POST',
      '/v1/nodes',
      {
        ...(o.name ? { name: o.name } : {}),
        driver: 'fake-hardware',
        deploy_interface: o.deployInterface ?? 'direct',
        ...(o.inspectInterface ? { inspect_interface: o.inspectInterface } : {}),
        ...(o.rescueInterface ? { rescue_interface: o.rescueInterface } : {}),
        network_interface: 'noop',
        driver_info: {
          deploy_kernel: 'http://127.0.0.1/ferrum-test-dummy-kernel',
          deploy_ramdisk: 'http://127.0.0.1/ferrum-test-dummy-ramdisk',
          ...o.driverInfo,
        },
        properties: { cpu_arch: 'x86_64', local_gb: 1, memory_mb: 1024, cpus: 1, vendor: 'lenovo', ...o.properties },
      },
      [201],
    );
  }

  createPort(nodeUuid: string, mac: string): Promise<IronicPort> {
    return this.call<IronicPort>('POST', '/v1/ports', { node_uuid: nodeUuid, address: mac }, [201]);
  }

  getNode(id: string): Promise<IronicNode> {
    return this.call<IronicNode>('GET', `/v1/nodes/${encodeURIComponent(id)}`);
  }

  /** The node's ports with every field. */
  async listPorts(nodeUuid: string): Promise<IronicPort[]> {
    const res = await this.call<{ ports: IronicPort[] }>('GET', `/v1/ports/detail?node_uuid=${encodeURIComponent(nodeUuid)}`);
    return res.ports;
  }

  /** GET /v1/nodes/{id}/inventory (API 1.81): what Ironic stored from the last inspection. */
  nodeInventory(id: string): Promise<{ inventory: Record<string, unknown>; plugin_data: Record<string, unknown> }> {
    return this.call('GET', `/v1/nodes/${encodeURIComponent(id)}/inventory`);
  }

  /** PATCH /v1/nodes/{id} with JSON-patch operations (e.g. instance_info fields). */
  patchNode(id: string, ops: Array<{ op: 'add' | 'replace' | 'remove'; path: string; value?: unknown }>): Promise<IronicNode> {
    return this.call<IronicNode>('PATCH', `/v1/nodes/${encodeURIComponent(id)}`, ops);
  }

  async setProvisionState(id: string, target: ProvisionTarget, extra: Record<string, unknown> = {}): Promise<void> {
    await this.call('PUT', `/v1/nodes/${encodeURIComponent(id)}/states/provision`, { target, ...extra }, [202]);
  }

  async setMaintenance(id: string, on: boolean, reason = 'ferrum conformance test'): Promise<void> {
    const path = `/v1/nodes/${encodeURIComponent(id)}/maintenance`;
    if (on) await this.call('PUT', path, { reason }, [202]);
    else await this.call('DELETE', path, undefined, [202]);
  }

  /**
   * Polls until the node is in one of `states`. Fails early on a failure state (or one listed in
   * `failOn`) and on timeout, with the node's last_error in the message; `onFailure` may add
   * context (e.g. the conductor log).
   */
  async waitForProvisionState(
    id: string,
    states: string | string[],
    o: { timeoutMs: number; failOn?: string[]; onFailure?: () => Promise<string> },
  ): Promise<IronicNode> {
    const wanted = Array.isArray(states) ? states : [states];
    const failOn = o.failOn ?? ['clean failed', 'deploy failed', 'error', 'inspect failed'];
    const deadline = Date.now() + o.timeoutMs;
    let node: IronicNode | null = null;
    let lastPollError = '';
    for (;;) {
      try {
        node = await this.getNode(id);
        if (wanted.includes(node.provision_state)) return node;
      } catch (err) {
        lastPollError = (err as Error).message;
      }
      const failed = node !== null && failOn.includes(node.provision_state) && !wanted.includes(node.provision_state);
      if (failed || Date.now() > deadline) {
        const extra = o.onFailure ? `\n${await o.onFailure().catch((e: Error) => e.message)}` : '';
        const where = node
          ? `node ${id} is "${node.provision_state}" (target ${node.target_provision_state}), last_error: ${node.last_error}`
          : `node ${id} could not be read: ${lastPollError}`;
        throw new Error(`${failed ? 'failed' : `timed out after ${o.timeoutMs} ms`} waiting for ${wanted.join('/')}: ${where}${extra}`);
      }
      await sleep(500);
    }
  }

  async close(): Promise<void> {
    // fetch keeps no state worth closing; kept for symmetry with the agent client.
  }
}

// ------------------------------------------------------------------------------------------------
// ironic-inspector REST client (API v1, noauth)

export interface IntrospectionStatus {
  uuid: string;
  state: string;
  finished: boolean;
  error: string | null;
  started_at: string | null;
  finished_at: string | null;
  [key: string]: unknown;
}

export class InspectorApi {
  constructor(readonly url: string) {}

  private async get<T>(path: string): Promise<T> {
    const res = await fetch(`${this.url}${path}`, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(30_000) });
    const text = await res.text();
    if (res.status !== 200) throw new IronicHttpError(res.status, text, `ironic-inspector GET ${path}`);
    return JSON.parse(text) as T;
  }

  /** GET /v1/introspection/<uuid>: state (starting, waiting, processing, finished, error…). */
  status(nodeUuid: string): Promise<IntrospectionStatus> {
    return this.get(`/v1/introspection/${encodeURIComponent(nodeUuid)}`);
  }

  /** The processed data the inspector stored ([processing]store_data = database; `logs` is never kept). */
  data(nodeUuid: string): Promise<Record<string, unknown>> {
    return this.get(`/v1/introspection/${encodeURIComponent(nodeUuid)}/data`);
  }

  /** The data exactly as the ramdisk posted it (minus `logs`). */
  unprocessedData(nodeUuid: string): Promise<Record<string, unknown>> {
    return this.get(`/v1/introspection/${encodeURIComponent(nodeUuid)}/data/unprocessed`);
  }

  /** Polls until the introspection is in `state`; fails early on an error. */
  async waitForState(nodeUuid: string, state: string, o: { timeoutMs: number; onFailure?: () => Promise<string> }): Promise<IntrospectionStatus> {
    const deadline = Date.now() + o.timeoutMs;
    let last: IntrospectionStatus | null = null;
    let lastError = '';
    for (;;) {
      try {
        last = await this.status(nodeUuid);
        if (last.state === state) return last;
      } catch (err) {
        lastError = (err as Error).message;
      }
      const failed = last !== null && (last.state === 'error' || last.error !== null);
      if (failed || Date.now() > deadline) {
        const extra = o.onFailure ? `\n${await o.onFailure().catch((e: Error) => e.message)}` : '';
        const where = last ? `introspection is "${last.state}", error: ${last.error}` : `status could not be read: ${lastError}`;
        throw new Error(`${failed ? 'failed' : `timed out after ${o.timeoutMs} ms`} waiting for introspection state ${state} of ${nodeUuid}: ${where}${extra}`);
      }
      await sleep(300);
    }
  }
}
