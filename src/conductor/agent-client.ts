// The conductor side's typed client of an agent's command API (Ferrum or IPA). Every answer is
// validated against the wire schemas; async commands are polled until they finish.
import { Agent, request, type Dispatcher } from 'undici';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Static, TSchema } from 'typebox';
import {
  AGENT_COMMANDS,
  AgentStatus,
  CommandList,
  CommandResult,
  FaultBody,
  RootDocument,
  isValid,
  parseWith,
  type AgentCommandName,
  type CommandParams,
  type CommandResultOf,
  type HardwareManagerVersions,
  type ImageInfo,
  type Node,
  type Ports,
  type StepRequest,
} from '../protocol/index.js';

export interface AgentClientOptions {
  /** The agent's callback_url, e.g. https://10.0.0.15:9999 */
  url: string;
  /** agent_token, sent on every command POST. */
  token?: string | null;
  /** PEM of the agent's certificate (agent_verify_ca); false skips verification. */
  verifyCa?: string | false;
  /** Per-request timeout (Ironic: [agent]command_timeout, 60 s). */
  requestTimeoutMs?: number;
  /** How often a running async command is polled. */
  pollIntervalMs?: number;
}

/** The agent answered an HTTP error (401, 404, 409, …). */
export class AgentHttpError extends Error {
  constructor(
    readonly status: number,
    readonly faultstring: string,
  ) {
    super(`agent answered ${status}: ${faultstring}`);
    this.name = 'AgentHttpError';
  }

  get busy(): boolean {
    return this.status === 409 || /agent is busy/i.test(this.faultstring);
  }
}

/** A command ended FAILED (or with a version mismatch). */
export class AgentCommandError extends Error {
  constructor(readonly result: CommandResult) {
    const e = result.command_error;
    super(`${result.command_name} ${result.command_status}: ${e ? `${e.type}: ${e.details || e.message}` : 'no error reported'}`);
    this.name = 'AgentCommandError';
  }
}

export class AgentTimeoutError extends Error {
  constructor(name: string, ms: number) {
    super(`${name} did not finish within ${ms} ms`);
    this.name = 'AgentTimeoutError';
  }
}

export interface RunOptions {
  /** Give up polling after this long (default 1 h). */
  timeoutMs?: number;
}

export class AgentClient {
  private readonly dispatcher: Dispatcher;
  private readonly base: string;
  token: string | null;

  constructor(private readonly opts: AgentClientOptions) {
    this.base = opts.url.replace(/\/+$/, '');
    this.token = opts.token ?? null;
    const timeout = opts.requestTimeoutMs ?? 60_000;
    this.dispatcher = new Agent({
      connect: {
        timeout,
        ...(opts.verifyCa === false ? { rejectUnauthorized: false } : opts.verifyCa ? { ca: opts.verifyCa } : {}),
      },
      headersTimeout: timeout,
      bodyTimeout: timeout,
    });
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  private async http<S extends TSchema>(method: 'GET' | 'POST', path: string, schema: S, body?: unknown): Promise<Static<S>> {
    const res = await request(`${this.base}${path}`, {
      method,
      dispatcher: this.dispatcher,
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: body === undefined ? null : JSON.stringify(body),
    });
    const text = await res.body.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new AgentHttpError(res.statusCode, `non-JSON answer: ${text.slice(0, 200)}`);
    }
    if (res.statusCode >= 400) {
      throw new AgentHttpError(res.statusCode, isValid(FaultBody, json) ? json.faultstring : text.slice(0, 500));
    }
    return parseWith(schema, json, `answer to ${method} ${path}`);
  }

  root(): Promise<RootDocument> {
    return this.http('GET', '/', RootDocument);
  }

  status(): Promise<AgentStatus> {
    return this.http('GET', '/v1/status', AgentStatus);
  }

  async listCommands(): Promise<CommandResult[]> {
    return (await this.http('GET', '/v1/commands/', CommandList)).commands;
  }

  getCommand(id: string, wait = false): Promise<CommandResult> {
    return this.http('GET', `/v1/commands/${encodeURIComponent(id)}${wait ? '?wait=true' : ''}`, CommandResult);
  }

  /** POSTs a command and returns the result object as the agent answered it (RUNNING for async without wait). */
  execute<N extends AgentCommandName>(name: N, params: CommandParams<N>, opts: { wait?: boolean } = {}): Promise<CommandResult> {
    const q = new URLSearchParams({ wait: opts.wait ? 'true' : 'false' });
    if (this.token) q.set('agent_token', this.token);
    return this.http('POST', `/v1/commands/?${q.toString()}`, CommandResult, { name, params });
  }

  /** Waits for a command to leave RUNNING, polling its status. */
  async waitFor(result: CommandResult, opts: RunOptions = {}): Promise<CommandResult> {
    const deadline = Date.now() + (opts.timeoutMs ?? 3_600_000);
    let current = result;
    while (current.command_status === 'RUNNING') {
      if (Date.now() > deadline) throw new AgentTimeoutError(result.command_name, opts.timeoutMs ?? 3_600_000);
      await sleep(this.opts.pollIntervalMs ?? 1000);
      current = await this.getCommand(result.id);
    }
    return current;
  }

  /** Runs a command to completion and returns its typed result; throws AgentCommandError if it failed. */
  async run<N extends AgentCommandName>(name: N, params: CommandParams<N>, opts: RunOptions = {}): Promise<CommandResultOf<N>> {
    const spec = AGENT_COMMANDS[name];
    const started = await this.execute(name, params, { wait: spec.mode === 'sync' });
    const done = await this.waitFor(started, opts);
    if (done.command_status !== 'SUCCEEDED') throw new AgentCommandError(done);
    return parseWith(spec.result, done.command_result, `result of ${name}`) as CommandResultOf<N>;
  }

  getCleanSteps(node: Node, ports: Ports) {
    return this.run('clean.get_clean_steps', { node, ports });
  }

  executeCleanStep(step: StepRequest, node: Node, ports: Ports, cleanVersion: HardwareManagerVersions | null, opts?: RunOptions) {
    return this.run('clean.execute_clean_step', { step, node, ports, clean_version: cleanVersion }, opts);
  }

  getDeploySteps(node: Node, ports: Ports) {
    return this.run('deploy.get_deploy_steps', { node, ports });
  }

  executeDeployStep(step: StepRequest, node: Node, ports: Ports, deployVersion: HardwareManagerVersions | null, opts?: RunOptions) {
    return this.run('deploy.execute_deploy_step', { step, node, ports, deploy_version: deployVersion }, opts);
  }

  sync() {
    return this.run('standby.sync', {});
  }

  powerOff() {
    return this.run('standby.power_off', {});
  }

  runImage() {
    return this.run('standby.run_image', {});
  }

  getPartitionUuids() {
    return this.run('standby.get_partition_uuids', {});
  }

  prepareImage(imageInfo: ImageInfo, configdrive: string | null = null, opts?: RunOptions) {
    return this.run('standby.prepare_image', { image_info: imageInfo, configdrive }, opts);
  }

  cacheImage(imageInfo: ImageInfo, force = false, opts?: RunOptions) {
    return this.run('standby.cache_image', { image_info: imageInfo, force }, opts);
  }

  installBootloader(params: CommandParams<'image.install_bootloader'>, opts?: RunOptions) {
    return this.run('image.install_bootloader', params, opts);
  }

  collectSystemLogs() {
    return this.run('log.collect_system_logs', {});
  }

  getHardwareInfo() {
    return this.run('poll.get_hardware_info', {});
  }

  finalizeRescue(rescuePassword: string, hashed = true) {
    return this.run('rescue.finalize_rescue', { rescue_password: rescuePassword, hashed });
  }

  startIscsiTarget(params: CommandParams<'iscsi.start_iscsi_target'>) {
    return this.run('iscsi.start_iscsi_target', params);
  }

  startFlow(flow: CommandParams<'flow.start_flow'>['flow'], opts?: RunOptions) {
    return this.run('flow.start_flow', { flow }, opts);
  }
}
