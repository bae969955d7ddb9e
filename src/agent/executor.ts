// The command executor: a registry of `extension.command` entries and the command history.
// POSTs are serialised by one lock (as IPA); status reads never take it, so GET /v1/commands
// answers at once while a long async command runs.
import { randomUUID } from 'node:crypto';
import type { TSchema } from 'typebox';
import type { CommandResult, CommandStatus } from '../protocol/commands.js';
import type { CommandMode } from '../protocol/agent-commands.js';
import { schemaErrors } from '../protocol/validate.js';
import { AgentError, asAgentError, errors } from './errors.js';
import type { Logger } from './log.js';

export interface CommandContext {
  readonly id: string;
  readonly log: Logger;
  /**
   * Lets a long command show how far it is: while it runs, its result object carries
   * {"progress": …} in command_result (IPA leaves it null; Ironic reads results only when done).
   */
  reportProgress(snapshot: () => unknown): void;
}

export interface CommandDefinition {
  /** `extension.command` */
  readonly name: string;
  readonly mode: CommandMode;
  readonly params: TSchema;
  /** Reads only: allowed before the agent has a token from lookup (status, inventory, step lists). */
  readonly readOnly?: boolean;
  /** Checks beyond the schema, run before the command is accepted (AgentError 400 to refuse). */
  validate?(params: any): void;
  // Params are validated against `params` before run is called.
  run(params: any, ctx: CommandContext): Promise<unknown>;
}

export class CommandRecord {
  readonly id = randomUUID();
  status: CommandStatus = 'RUNNING';
  error: AgentError | null = null;
  result: unknown = null;
  readonly startedAt = Date.now();
  finishedAt: number | null = null;
  progress: (() => unknown) | null = null;
  private resolveDone!: () => void;
  readonly done = new Promise<void>((resolve) => (this.resolveDone = resolve));

  constructor(
    /** Short name (`execute_clean_step`), or the dotted name for a failed sync command, as IPA. */
    public commandName: string,
    readonly fullName: string,
  ) {}

  finish(status: CommandStatus, result: unknown, error: AgentError | null): void {
    this.status = status;
    this.result = result;
    this.error = error;
    this.finishedAt = Date.now();
    this.resolveDone();
  }

  get isDone(): boolean {
    return this.status !== 'RUNNING';
  }

  toWire(): CommandResult {
    return {
      id: this.id,
      command_name: this.commandName,
      command_status: this.status,
      command_error: this.error ? this.error.toCommandError() : null,
      command_result: this.status === 'RUNNING' && this.progress ? { progress: this.progress() } : this.result,
    };
  }
}

export interface ExecuteOptions {
  wait: boolean;
}

export class Executor {
  private readonly registry = new Map<string, CommandDefinition>();
  private readonly extensions = new Set<string>();
  private history: CommandRecord[] = [];
  private byId = new Map<string, CommandRecord>();
  private lock: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly log: Logger,
    /** Called when an async command ends (IPA forces a heartbeat then). */
    private readonly onAsyncFinished: (record: CommandRecord) => void = () => {},
  ) {}

  register(defs: Iterable<CommandDefinition>): void {
    for (const def of defs) {
      const [ext, cmd] = splitName(def.name);
      if (!ext || !cmd) throw new Error(`bad command name ${def.name}`);
      if (this.registry.has(def.name)) throw new Error(`command ${def.name} registered twice`);
      this.registry.set(def.name, def);
      this.extensions.add(ext);
    }
  }

  /** Compiles every parameter validator now (in the background after start) rather than on first use. */
  prewarm(): void {
    for (const def of this.registry.values()) schemaErrors(def.params, {});
  }

  definition(name: string): CommandDefinition | undefined {
    return this.registry.get(name);
  }

  commandNames(): string[] {
    return [...this.registry.keys()].sort();
  }

  list(): CommandResult[] {
    return this.history.map((r) => r.toWire());
  }

  get(id: string): CommandRecord | undefined {
    return this.byId.get(id);
  }

  /** The newest command, if any. */
  last(): CommandRecord | undefined {
    return this.history[this.history.length - 1];
  }

  /** Forget every command: used by a simulated reboot, where a fresh ramdisk would have no history. */
  reset(): void {
    this.history = [];
    this.byId = new Map();
  }

  /**
   * Runs a command as IPA does. Throws AgentError for what IPA answers with an HTTP error
   * (400 bad name/params, 404 unknown extension, 409 busy); everything else ends in the history.
   */
  execute(name: string, params: Record<string, unknown>, opts: ExecuteOptions): Promise<CommandRecord> {
    const run = this.lock.then(() => this.executeLocked(name, params));
    this.lock = run.catch(() => undefined);
    return run.then(async (record) => {
      if (opts.wait) await record.done;
      return record;
    });
  }

  private async executeLocked(name: string, params: Record<string, unknown>): Promise<CommandRecord> {
    const [ext, cmd] = splitName(name);
    if (!ext || !cmd) throw errors.invalidCommand('Command name must be of the form <extension>.<name>');
    const last = this.last();
    if (last && !last.isDone) throw errors.busy(last.commandName);
    if (!this.extensions.has(ext)) throw errors.notFound('Extension', ext);
    const def = this.registry.get(name);
    if (!def) throw errors.invalidCommand(`Unknown command: ${cmd}`);
    const problems = schemaErrors(def.params, params);
    if (problems.length > 0) throw errors.invalidParams(`${name}: ${problems.join('; ')}`);
    def.validate?.(params);

    const record = new CommandRecord(cmd, name);
    const log = this.log.child({ command: name, command_id: record.id });
    const ctx: CommandContext = { id: record.id, log, reportProgress: (fn) => (record.progress = fn) };

    if (def.mode === 'sync') {
      try {
        const result = await def.run(params, ctx);
        record.finish('SUCCEEDED', typeof result === 'string' ? { result } : (result ?? null), null);
      } catch (err) {
        const agentErr = asAgentError(err);
        if (agentErr.code === 400) throw agentErr; // InvalidContentError family: HTTP 400, not stored
        log.error({ err }, `command ${name} failed`);
        record.commandName = name;
        record.finish('FAILED', null, agentErr);
      }
      this.append(record);
      log.info({ status: record.status, ms: record.finishedAt! - record.startedAt }, `command ${name} done`);
      return record;
    }

    this.append(record);
    log.info(`command ${name} started`);
    void this.runAsync(def, params, ctx, record);
    return record;
  }

  private async runAsync(def: CommandDefinition, params: unknown, ctx: CommandContext, record: CommandRecord): Promise<void> {
    const short = record.commandName;
    try {
      const result = await def.run(params, ctx);
      record.finish('SUCCEEDED', typeof result === 'string' ? { result: `${short}: ${result}` } : (result ?? null), null);
    } catch (err) {
      const agentErr = asAgentError(err);
      if (agentErr.type === 'VersionMismatch') {
        record.finish('CLEAN_VERSION_MISMATCH', null, agentErr);
      } else {
        ctx.log.error({ err }, `command ${def.name} failed`);
        record.finish('FAILED', null, agentErr);
      }
    }
    ctx.log.info({ status: record.status, ms: record.finishedAt! - record.startedAt }, `command ${def.name} done`);
    try {
      this.onAsyncFinished(record);
    } catch (err) {
      this.log.error({ err }, 'async-finished hook failed');
    }
  }

  private append(record: CommandRecord): void {
    this.history.push(record);
    this.byId.set(record.id, record);
  }
}

function splitName(name: string): [string, string] | [] {
  const dot = name.indexOf('.');
  if (dot <= 0 || dot === name.length - 1) return [];
  return [name.slice(0, dot), name.slice(dot + 1)];
}
