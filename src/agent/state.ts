// What the agent knows about itself and its conductor: the node, the token and what a deploy
// recorded. One instance per process; a simulated reboot clears it as a real reboot would.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { LookupNode } from '../protocol/ironic-api.js';
import type { PartitionUuids } from '../protocol/agent-commands.js';

export type Phase = 'starting' | 'inspecting' | 'looking-up' | 'heartbeating' | 'standalone' | 'rescued' | 'stopping';

export class AgentState {
  phase: Phase = 'starting';
  node: LookupNode | null = null;
  /** Token from lookup or the kernel command line (virtual media). */
  token: string | null;
  /** True once a lookup finished: from then on only the conductor may run commands. */
  lookedUp = false;
  heartbeatTimeout: number | null = null;
  partitionUuids: PartitionUuids = {};
  /** Config the conductor sent in the lookup answer (image formats, deep inspection, …). */
  conductorConfig: Record<string, unknown> = {};
  /** The image cache_image (or a previous write) put on a device this boot. */
  cachedImage: { id: string; device: string } | null = null;

  constructor(
    private readonly kernelToken: string | null,
    readonly standalone: boolean,
  ) {
    this.token = kernelToken;
  }

  /** Adopts what lookup returned. A masked "******" token keeps the one we have (IPA). */
  applyLookup(node: LookupNode, config: Record<string, unknown>, heartbeatTimeout: number): void {
    this.node = node;
    this.conductorConfig = config;
    this.heartbeatTimeout = heartbeatTimeout;
    const token = config['agent_token'];
    if (typeof token === 'string' && token !== '******' && token.length >= 32) this.token = token;
    this.lookedUp = true;
  }

  /** Forgets the node, the token and deploy results, as a freshly booted ramdisk would. */
  resetForReboot(): void {
    this.node = null;
    this.token = this.kernelToken;
    this.lookedUp = false;
    this.heartbeatTimeout = null;
    this.partitionUuids = {};
    this.conductorConfig = {};
    this.cachedImage = null;
  }

  /**
   * May a command run with this token? With a known token, only that exact token (compared in
   * constant time). Without one: anything in standalone mode or after a token-less lookup; before
   * lookup only read-only commands, so nobody can erase a disk before the conductor claims the node.
   */
  authorizeCommand(provided: string | undefined, readOnly: boolean): boolean {
    if (this.token !== null) return provided !== undefined && tokensEqual(provided, this.token);
    if (this.standalone || this.lookedUp) return true;
    return readOnly;
  }

  /** GETs: the 2023.1 conductor sends no token; a token that is sent must be right. */
  authorizeRead(provided: string | undefined): boolean {
    if (provided === undefined || this.token === null) return true;
    return tokensEqual(provided, this.token);
  }
}

/** Constant-time comparison that does not leak the length either. */
export function tokensEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}
