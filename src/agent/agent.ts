// The agent's life: serve the command API at once, find the conductor (lookup), heartbeat, and
// start over after a simulated reboot (--power none), as a freshly booted ramdisk would.
import { hostname } from 'node:os';
import { promises as fs } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Config } from './config.js';
import { Executor } from './executor.js';
import { commandStatusMessage } from './status-message.js';
import { LocalHost, type Host, type PowerAction } from './host/host.js';
import type { AgentLogging, Logger } from './log.js';
import { AgentState } from './state.js';
import { HardwareManagers } from './hardware/managers.js';
import { genericHardwareManager } from './hardware/generic-manager.js';
import { InventoryCollector } from './hardware/inventory/index.js';
import { listInterfaces } from './hardware/network-interfaces.js';
import type { Services } from './services.js';
import { ApiListener } from './api/listener.js';
import type { TlsMaterial } from './api/server.js';
import { cleanCommands } from './extensions/clean.js';
import { deployCommands } from './extensions/deploy.js';
import { standbyCommands } from './extensions/standby.js';
import { logCommands } from './extensions/log.js';
import { pollCommands } from './extensions/poll.js';
import { iscsiCommands } from './extensions/iscsi.js';
import { rescueCommands } from './extensions/rescue.js';
import { flowCommands } from './extensions/flow.js';
import { imageCommands } from './extensions/image.js';
import type { IronicClient } from './ironic-client.js';
import type { Heartbeater } from './heartbeat.js';
import { detectAdvertiseHost, formatCallbackUrl } from './advertise.js';
import { loadOrCreateCertificate } from './tls.js';
import type { LldpListener } from './inspection/lldp.js';
import { FERRUM_VERSION, IPA_COMPAT_VERSION } from './version.js';
import { API_VERSION_AGENT_VERIFY_CA, compareApiVersions } from '../protocol/ironic-api.js';
import type { AgentStatus } from '../protocol/api-root.js';

export class Agent {
  readonly state: AgentState;
  readonly host: Host;
  readonly executor: Executor;
  readonly services: Services;
  readonly startedAt = Date.now() / 1000;
  private readonly log: Logger;
  private readonly listener: ApiListener;
  private client: IronicClient | null = null;
  private heartbeater: Heartbeater | null = null;
  private advertiseHost: string | null = null;
  private rebootRequested: (() => void) | null = null;
  private stopped = false;
  /** Keeps the process alive once it no longer serves (after rescue). */
  private idle: NodeJS.Timeout | null = null;
  private lifecycle: Promise<void> | null = null;
  private readonly abort = new AbortController();
  /** Lookups after the first one wait as long as it takes: the "machine" is off until Ironic boots it. */
  private rebooted = false;
  private lldp: LldpListener | null = null;
  /** Settles once LLDP listening has started (or could not): readers wait on it, never race it. */
  private lldpReady: Promise<LldpListener | null> = Promise.resolve(null);
  /** Node UUID from inspection, passed to the first lookup. */
  private inspectedNode: string | null = null;

  constructor(
    readonly config: Config,
    logging: AgentLogging,
    host?: Host,
  ) {
    this.log = logging.logger;
    this.state = new AgentState(config.agentToken, config.standalone);
    this.host =
      host ??
      new LocalHost({
        sysRoot: config.sysRoot,
        devices: config.devices,
        power: config.power,
        log: this.log.child({ part: 'host' }),
        onSimulatedPower: (action) => this.onSimulatedPower(action),
      });
    this.executor = new Executor(this.log, () => this.heartbeater?.force());
    this.services = {
      config,
      host: this.host,
      log: this.log,
      logRing: logging.ring,
      state: this.state,
      managers: new HardwareManagers([genericHardwareManager()]),
      inventory: new InventoryCollector(this.host, {
        bootif: config.bootif,
        interfaces: config.interfaces,
        lldp: config.collectLldp ? () => this.lldpReady : undefined,
      }),
      stopServing: (reason) => this.stopServing(reason),
    };
    for (const ext of [cleanCommands, deployCommands, standbyCommands, logCommands, pollCommands, imageCommands, iscsiCommands, rescueCommands]) this.executor.register(ext(this.services));
    this.executor.register(flowCommands(this.executor));
    this.listener = new ApiListener(
      { executor: this.executor, state: this.state, log: this.log.child({ part: 'api' }), status: () => this.status() },
      config.listenHost,
      config.listenPort,
    );
  }

  status(): AgentStatus {
    return {
      started_at: this.startedAt,
      version: IPA_COMPAT_VERSION,
      ferrum_version: FERRUM_VERSION,
      // Ferrum's additions (optional; IPA sends neither): for the ramdisk's console status line.
      phase: this.state.phase,
      node_uuid: this.state.node?.uuid ?? null,
    };
  }

  /** Starts serving; lookup and heartbeats continue in the background (see `done`). */
  async start(): Promise<void> {
    await this.checkDevices();
    this.log.info({ version: FERRUM_VERSION, ipa_compat: IPA_COMPAT_VERSION, devices: this.config.devices, power: this.config.power }, 'Ferrum agent starting');
    // Set before the API answers: an inventory taken at once waits for LLDP instead of missing it.
    this.lldpReady = this.startLldp();
    await this.listener.listen(await this.staticTls());
    // Warm-up after the API answers: what the first commands would otherwise pay for.
    setImmediate(() => {
      (this.host as Partial<LocalHost>).preload?.();
      this.executor.prewarm();
      this.services.inventory.prewarm();
    });
    if (this.config.standalone) {
      this.state.phase = 'standalone';
      this.log.warn('standalone mode: no lookup, no heartbeats; commands need no token');
      return;
    }
    if (this.config.apiUrls.length === 0) {
      if (this.config.inspectionCallbackUrl) this.lifecycle = this.inspectOnly();
      else this.log.warn('no Ironic API URL: serving the command API only');
      return;
    }
    // The conductor-facing modules load after the API answers: the start-up time is the API's.
    const { IronicClient } = await import('./ironic-client.js');
    this.client = new IronicClient({
      apiUrls: this.config.apiUrls,
      insecure: this.config.insecure,
      globalRequestId: this.config.globalRequestId,
      forcedVersion: this.config.ironicApiVersion,
    });
    this.lifecycle = this.runLifecycle();
  }

  /** Resolves when the agent stops; rejects if lookup gives up (the process should exit non-zero). */
  get done(): Promise<void> {
    return this.lifecycle ?? Promise.resolve();
  }

  private async startLldp(): Promise<LldpListener | null> {
    const wanted = this.config.collectLldp || (this.config.inspectionCallbackUrl && this.config.inspectionCollectors.includes('lldp'));
    if (!wanted) return null;
    try {
      const { LldpListener } = await import('./inspection/lldp.js');
      const nics = await listInterfaces(this.host, this.config.interfaces);
      if (this.stopped) return null; // stop() came first: start no tcpdump it would not end
      this.lldp = new LldpListener(this.log.child({ part: 'lldp' }));
      this.lldp.start(
        nics.map((n) => n.name),
        this.config.lldpTimeout,
      );
      return this.lldp;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'LLDP listening could not start');
      return null;
    }
  }

  /** Inspection without an Ironic API (inspector-only setups): report, then keep serving. */
  private async inspectOnly(): Promise<void> {
    this.state.phase = 'inspecting';
    const { inspect } = await import('./inspection/inspect.js');
    await inspect(this.services, await this.lldpReady);
  }

  private async runLifecycle(): Promise<void> {
    if (this.config.inspectionCallbackUrl) {
      this.state.phase = 'inspecting';
      const { inspect } = await import('./inspection/inspect.js');
      this.inspectedNode = (await inspect(this.services, await this.lldpReady)).nodeUuid;
    }
    while (!this.stopped) {
      await this.lookupAndHeartbeat();
    }
  }

  private async lookupAndHeartbeat(): Promise<void> {
    const client = this.client!;
    this.advertiseHost ??= await detectAdvertiseHost({
      host: this.host,
      log: this.log,
      advertiseHost: this.config.advertiseHost,
      networkInterface: this.config.networkInterface,
      apiUrl: this.config.apiUrls[0] ?? null,
      attempts: this.config.ipLookupAttempts,
      sleepSec: this.config.ipLookupSleep,
      signal: this.abort.signal,
    });
    this.state.phase = 'looking-up';
    const { lookupNode, lookupBackoff } = await import('./lookup.js');
    const lookupOnce = () =>
      lookupNode({
        client,
        macs: async () => (await listInterfaces(this.host, this.config.interfaces)).map((i) => i.macAddress),
        nodeUuid: this.rebooted ? null : this.inspectedNode,
        timeoutSec: this.rebooted ? 0 : this.config.lookupTimeout,
        interval: this.config.lookupInterval,
        maxInterval: this.config.lookupMaxInterval,
        log: this.log.child({ part: 'lookup' }),
        signal: this.abort.signal,
      });
    let res = await lookupOnce();
    // "******" means Ironic still holds a token from an earlier boot that we do not know: every
    // heartbeat would be refused. Wait for the conductor to clear it (it does on every power
    // action) instead of heartbeating into a refusal, which would loop without pause.
    for (let attempt = 1; res.config?.agent_token === '******' && this.state.token === null; attempt++) {
      const delay = lookupBackoff(attempt, this.config.lookupInterval, this.config.lookupMaxInterval);
      this.log.warn({ node: res.node.uuid, attempt }, `Ironic holds an agent token from an earlier boot; looking up again in ${delay.toFixed(1)} s`);
      await sleep(delay * 1000, undefined, { signal: this.abort.signal });
      res = await lookupOnce();
    }
    this.state.applyLookup(res.node, (res.config ?? {}) as Record<string, unknown>, res.heartbeatTimeout);
    if (this.state.token === null) this.log.warn('lookup gave no agent token: commands are accepted without one');

    await this.listener.listen(await this.tlsFor(await client.maxVersion()));
    const callbackUrl = formatCallbackUrl(this.listener.protocol, this.advertiseHost, this.config.advertisePort);
    const rebooted = new Promise<void>((resolve) => (this.rebootRequested = resolve));
    const nodeLog = this.log.child({ node: res.node.uuid });
    const { Heartbeater } = await import('./heartbeat.js');
    this.heartbeater = new Heartbeater({
      client,
      nodeUuid: res.node.uuid,
      heartbeatTimeout: res.heartbeatTimeout,
      log: nodeLog.child({ part: 'heartbeat' }),
      body: async () => ({
        callback_url: callbackUrl,
        agent_token: this.state.token,
        agent_version: IPA_COMPAT_VERSION,
        ...(this.listener.tls ? { agent_verify_ca: this.listener.tls.cert } : {}),
        ...(this.config.heartbeatStatusMessage ? { agent_status_message: commandStatusMessage(this.executor.last()) ?? undefined } : {}),
      }),
      onTokenRejected: this.config.power === 'none' ? () => this.simulateReboot('Ironic no longer accepts our token') : undefined,
    });
    this.state.phase = 'heartbeating';
    nodeLog.info({ callback_url: callbackUrl, heartbeat_timeout: res.heartbeatTimeout }, 'heartbeating');
    this.heartbeater.start();
    await rebooted;
    await this.heartbeater.stop();
    this.heartbeater = null;
    if (this.stopped) return;
    // What a reboot into a fresh ramdisk would forget:
    this.executor.reset();
    this.state.resetForReboot();
    this.rebooted = true;
    this.log.info('simulated reboot done: looking up again');
  }

  /** TLS for the API after lookup: auto-TLS when the conductor can receive our certificate. */
  private async tlsFor(serverVersion: string): Promise<TlsMaterial | null> {
    const fixed = await this.staticTls();
    if (fixed) return fixed;
    if (!this.config.enableAutoTls || this.config.advertiseProtocol === 'https') return null;
    if (compareApiVersions(serverVersion, API_VERSION_AGENT_VERIFY_CA) < 0) return null;
    return loadOrCreateCertificate(this.config.stateDir, this.advertiseHost!, hostname(), this.log);
  }

  private async staticTls(): Promise<TlsMaterial | null> {
    if (!this.config.listenTls || !this.config.certFile || !this.config.keyFile) return null;
    const [cert, key] = await Promise.all([fs.readFile(this.config.certFile, 'utf8'), fs.readFile(this.config.keyFile, 'utf8')]);
    return { cert, key };
  }

  private onSimulatedPower(action: PowerAction): void {
    // Let the power command finish and be recorded before the "machine" goes away.
    const running = this.executor.last();
    void (running ? running.done : Promise.resolve()).then(() =>
      setTimeout(() => this.simulateReboot(action === 'off' ? 'power off' : 'reboot'), 200),
    );
  }

  /**
   * After rescue.finalize_rescue: heartbeats stop at once, the API once the reply has gone out. The
   * process stays (idle): exiting would have systemd restart it, and it would look up again.
   */
  private stopServing(reason: string): void {
    if (this.state.phase === 'rescued') return;
    this.state.phase = 'rescued';
    this.log.warn({ reason }, 'no longer serving: heartbeats stop now, the command API after this reply');
    void this.heartbeater?.stop();
    setTimeout(() => void this.listener.close().then(() => this.log.info('command API closed')), 250);
    // Nothing else keeps the event loop busy now; without this the process would end.
    this.idle ??= setInterval(() => undefined, 2 ** 30);
  }

  simulateReboot(reason: string): void {
    this.log.warn({ reason }, 'simulated reboot: dropping token and node, back to lookup');
    this.rebootRequested?.();
    this.rebootRequested = null;
  }

  private async checkDevices(): Promise<void> {
    for (const dev of this.config.devices ?? []) {
      let stat;
      try {
        stat = await fs.stat(dev);
      } catch {
        throw new Error(`--devices: ${dev} does not exist`);
      }
      if (!stat.isBlockDevice()) throw new Error(`--devices: ${dev} is not a block device`);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.idle) clearInterval(this.idle);
    this.abort.abort();
    this.rebootRequested?.();
    await this.heartbeater?.stop();
    this.lldp?.stop();
    await this.listener.close();
    await this.lifecycle?.catch(() => undefined);
    await this.client?.close();
  }
}
