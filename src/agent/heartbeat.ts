// The heartbeat loop. Every heartbeat_timeout × U(0.3, 0.6) s after the last success; failures are
// retried every 5 s forever (conductor outages and restarts are survived); after an async command
// ends a heartbeat goes out as soon as 5 s have passed since the last success, as IPA does.
import type { HeartbeatBody } from '../protocol/ironic-api.js';
import { IronicHttpError, type IronicClient } from './ironic-client.js';
import type { Logger } from './log.js';

export const RETRY_AFTER_FAILURE_MS = 5_000;
export const FORCED_MIN_GAP_MS = 5_000;

export function heartbeatInterval(timeoutSec: number, random: () => number = Math.random): number {
  return timeoutSec * (0.3 + 0.3 * random()) * 1000;
}

export interface HeartbeaterOptions {
  client: IronicClient;
  nodeUuid: string;
  heartbeatTimeout: number;
  body: () => Promise<Omit<HeartbeatBody, 'agent_token'> & { agent_token?: string | null }>;
  log: Logger;
  /** Ironic rejected our token: the conductor rebooted "us" (power none mode). */
  onTokenRejected?: () => void;
  random?: () => number;
  /** Wait after a failed heartbeat before retrying (IPA: the 5 s loop tick). Tests shorten it. */
  retryAfterFailureMs?: number;
  /** Least gap between the last success and a forced heartbeat (IPA: 5 s). Tests shorten it. */
  forcedMinGapMs?: number;
}

export class Heartbeater {
  private running = false;
  private forcePending = false;
  /** Bumped by every force(), so a force that arrives while a heartbeat is in flight is not lost. */
  private forceSeq = 0;
  private lastSuccess = 0;
  private lastAttempt = 0;
  private lastAttemptFailed = false;
  private intervalMs: number;
  private wake: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private loop: Promise<void> | null = null;
  /** Counters, for the status line and tests. */
  readonly stats = { sent: 0, accepted: 0, failed: 0 };

  constructor(private readonly o: HeartbeaterOptions) {
    this.intervalMs = 0; // the first heartbeat goes out at once
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.kick();
    await this.loop;
  }

  /** Heartbeat soon: used when an async command finishes. */
  force(): void {
    this.forcePending = true;
    this.forceSeq++;
    this.kick();
  }

  private kick(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.wake?.();
  }

  private nextDue(): number {
    if (this.lastAttemptFailed) return this.lastAttempt + (this.o.retryAfterFailureMs ?? RETRY_AFTER_FAILURE_MS);
    let due = this.lastSuccess + this.intervalMs;
    if (this.forcePending) due = Math.min(due, this.lastSuccess + (this.o.forcedMinGapMs ?? FORCED_MIN_GAP_MS));
    return due;
  }

  private async run(): Promise<void> {
    while (this.running) {
      const wait = this.nextDue() - Date.now();
      if (wait > 0) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
          this.timer = setTimeout(resolve, wait);
        });
        this.wake = null;
        continue;
      }
      await this.beat();
    }
  }

  private async beat(): Promise<void> {
    const random = this.o.random ?? Math.random;
    const attemptAt = Date.now();
    const forceSeqAtStart = this.forceSeq;
    this.lastAttempt = attemptAt;
    this.stats.sent++;
    try {
      const features = await this.o.client.heartbeatFeatures();
      const full = await this.o.body();
      const body: HeartbeatBody = { callback_url: full.callback_url };
      if (features.token) body.agent_token = full.agent_token ?? null;
      if (features.agentVersion && full.agent_version) body.agent_version = full.agent_version;
      if (features.verifyCa && full.agent_verify_ca) body.agent_verify_ca = full.agent_verify_ca;
      let version = features.version;
      // Only with something to say, and only where the server knows the field: otherwise the
      // heartbeat is IPA's, field for field and version for version.
      if (features.statusVersion && full.agent_status_message) {
        body.agent_status_message = full.agent_status_message;
        version = features.statusVersion;
      }
      await this.o.client.heartbeat(this.o.nodeUuid, body, version);
      this.stats.accepted++;
      this.lastSuccess = attemptAt;
      // Only the forces this heartbeat answered: one requested while it was in flight (an async
      // command ended meanwhile) still needs its own heartbeat, or Ironic waits a full interval.
      if (this.forceSeq === forceSeqAtStart) this.forcePending = false;
      if (this.lastAttemptFailed) this.o.log.info('heartbeat accepted again');
      this.lastAttemptFailed = false;
      this.o.log.debug({ node: this.o.nodeUuid }, 'heartbeat accepted');
    } catch (err) {
      this.stats.failed++;
      this.lastAttemptFailed = true;
      if (err instanceof IronicHttpError && err.status === 409) {
        this.o.log.warn(`heartbeat conflict (409): ${err.faultstring}`);
      } else if (err instanceof IronicHttpError && err.status === 400 && /agent token/i.test(err.faultstring)) {
        this.o.log.warn(`heartbeat refused: ${err.faultstring}`);
        if (this.o.onTokenRejected) {
          this.running = false;
          this.o.onTokenRejected();
        }
      } else {
        this.o.log.error(`heartbeat failed: ${(err as Error).message}`);
      }
      return; // nextDue() retries in 5 s
    }
    this.intervalMs = heartbeatInterval(this.o.heartbeatTimeout, random);
  }
}
