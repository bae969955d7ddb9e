// Hardware managers, as IPA has them: an ordered chain (highest support level first). The first
// manager that implements a step runs it; step listings are merged, grouped by manager class.
import type { Config } from '../config.js';
import { errors } from '../errors.js';
import type { Host } from '../host/host.js';
import type { Logger } from '../log.js';
import type { HardwareManagerVersions, Node, Ports, Step, StepsByManager } from '../../protocol/steps.js';
import type { Services } from '../services.js';
import type { CommandContext } from '../executor.js';

export interface StepContext {
  node: Node;
  ports: Ports;
  args: Record<string, unknown>;
  host: Host;
  config: Config;
  log: Logger;
  /** The agent's services and the running command, for steps that do more than touch disks (write_image). */
  services: Services;
  command: CommandContext;
}

export type StepMethod = (ctx: StepContext) => Promise<unknown>;

export interface HardwareManager {
  /** Name used in hardware_manager_version, e.g. generic_hardware_manager. */
  readonly name: string;
  readonly version: string;
  /** Class name used to group steps, e.g. GenericHardwareManager. */
  readonly className: string;
  /** IPA: 1 generic, 2 mainline, 3 service-provider. */
  readonly supportLevel: number;
  cleanSteps(): Step[];
  deploySteps(): Step[];
  readonly methods: Readonly<Record<string, StepMethod>>;
}

export type StepKind = 'clean' | 'deploy';

export class HardwareManagers {
  private readonly chain: HardwareManager[];

  constructor(managers: HardwareManager[]) {
    this.chain = [...managers].sort((a, b) => b.supportLevel - a.supportLevel);
  }

  versions(): HardwareManagerVersions {
    return Object.fromEntries(this.chain.map((m) => [m.name, m.version]));
  }

  /** Steps by manager class; a step offered by several managers goes to the best one (level, then priority). */
  steps(kind: StepKind): StepsByManager {
    const best = new Map<string, { manager: HardwareManager; step: Step }>();
    for (const manager of this.chain) {
      for (const step of kind === 'clean' ? manager.cleanSteps() : manager.deploySteps()) {
        const prev = best.get(step.step);
        if (
          !prev ||
          manager.supportLevel > prev.manager.supportLevel ||
          (manager.supportLevel === prev.manager.supportLevel && step.priority > prev.step.priority)
        ) {
          best.set(step.step, { manager, step });
        }
      }
    }
    const out: StepsByManager = {};
    for (const { manager, step } of best.values()) (out[manager.className] ??= []).push(step);
    return out;
  }

  /** True when `provided` (from Ironic) is absent or equal to ours. */
  versionsMatch(provided: HardwareManagerVersions | null | undefined): boolean {
    if (!provided || Object.keys(provided).length === 0) return true;
    const ours = this.versions();
    const keys = new Set([...Object.keys(ours), ...Object.keys(provided)]);
    for (const k of keys) if (ours[k] !== provided[k]) return false;
    return true;
  }

  async dispatch(method: string, ctx: StepContext): Promise<unknown> {
    for (const manager of this.chain) {
      const fn = manager.methods[method];
      if (fn) return fn(ctx);
    }
    throw errors.methodNotFound(method);
  }
}
