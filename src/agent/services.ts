// What command extensions may use. Passed explicitly: no module-level state.
import type { Config } from './config.js';
import type { Host } from './host/host.js';
import type { Logger, LogRing } from './log.js';
import type { AgentState } from './state.js';
import type { HardwareManagers } from './hardware/managers.js';
import type { InventoryCollector } from './hardware/inventory/index.js';

export interface Services {
  readonly config: Config;
  readonly host: Host;
  readonly log: Logger;
  readonly logRing: LogRing;
  readonly state: AgentState;
  readonly managers: HardwareManagers;
  readonly inventory: InventoryCollector;
  /** Stops the command API and heartbeats once the current reply is sent (rescue: the node is the tenant's now). */
  stopServing(reason: string): void;
}
