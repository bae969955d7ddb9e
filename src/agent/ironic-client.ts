// The agent's client of Ironic's ramdisk endpoints (undici): version discovery, lookup, heartbeat.
// Every call sends the negotiated X-OpenStack-Ironic-API-Version; without it Ironic answers 404.
import { Agent, request, type Dispatcher } from 'undici';
import {
  API_VERSION_AGENT_TOKEN,
  API_VERSION_AGENT_VERIFY_CA,
  API_VERSION_AGENT_VERSION,
  API_VERSION_HEADER,
  HEARTBEAT_API_VERSION_CAP,
  API_VERSION_HEARTBEAT_STATUS,
  IronicRootDocument,
  LOOKUP_API_VERSION_CAP,
  LookupResponse,
  MIN_RAMDISK_API_VERSION,
  REQUEST_ID_HEADER,
  compareApiVersions,
  ironicFaultString,
  minApiVersion,
  type HeartbeatBody,
} from '../protocol/ironic-api.js';
import { parseWith } from '../protocol/validate.js';

/** Ironic answered with an HTTP error. */
export class IronicHttpError extends Error {
  constructor(
    readonly status: number,
    readonly faultstring: string,
    readonly url: string,
  ) {
    super(`${url} answered ${status}: ${faultstring}`);
    this.name = 'IronicHttpError';
  }
}

/** Ironic could not be reached (refused, reset, timeout, DNS…). */
export class IronicConnectionError extends Error {
  constructor(
    readonly url: string,
    cause: unknown,
  ) {
    super(`cannot reach ${url}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'IronicConnectionError';
  }
}

export interface IronicClientOptions {
  apiUrls: string[];
  insecure: boolean;
  globalRequestId: string | null;
  /** Forced API version (ipa-ironic-api-version): no discovery. */
  forcedVersion: string | null;
  timeoutMs?: number;
}

export type LookupResult = LookupResponse & { heartbeatTimeout: number };

export class IronicClient {
  private readonly dispatcher: Dispatcher;
  private serverVersion: string | null;
  /** The API URL that answered last; tried first next time. */
  private current = 0;

  constructor(private readonly opts: IronicClientOptions) {
    this.dispatcher = new Agent({
      connect: { rejectUnauthorized: !opts.insecure, timeout: opts.timeoutMs ?? 30_000 },
      headersTimeout: opts.timeoutMs ?? 30_000,
      bodyTimeout: opts.timeoutMs ?? 30_000,
    });
    this.serverVersion = opts.forcedVersion;
  }

  get apiUrl(): string {
    return this.opts.apiUrls[this.current] ?? '';
  }

  /** The server's maximum API version, discovered once with GET / (retried by callers on failure). */
  async maxVersion(): Promise<string> {
    if (this.serverVersion) return this.serverVersion;
    const { body } = await this.call('GET', '/', null, null, [200]);
    const doc = parseWith(IronicRootDocument, JSON.parse(body), 'Ironic API root document');
    const version = doc.default_version.version;
    if (compareApiVersions(version, MIN_RAMDISK_API_VERSION) < 0) {
      throw new Error(`Ironic API ${version} is older than ${MIN_RAMDISK_API_VERSION} and has no ramdisk endpoints`);
    }
    this.serverVersion = version;
    return version;
  }

  async lookup(macs: string[], nodeUuid: string | null): Promise<LookupResult> {
    const version = minApiVersion(await this.maxVersion(), LOOKUP_API_VERSION_CAP);
    const query = new URLSearchParams({ addresses: macs.join(',') });
    if (nodeUuid) query.set('node_uuid', nodeUuid);
    const { body } = await this.call('GET', `/v1/lookup?${query.toString()}`, version, null, [200]);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw new Error('lookup answer is not JSON');
    }
    const res = parseWith(LookupResponse, parsed, 'lookup answer');
    const heartbeatTimeout = res.config?.heartbeat_timeout ?? res.heartbeat_timeout;
    if (heartbeatTimeout === undefined) throw new Error('lookup answer has no heartbeat_timeout');
    return { ...res, heartbeatTimeout };
  }

  /** What a heartbeat may carry at the server's version. */
  /**
   * `version`: IPA's (capped at 1.68). `statusVersion`: the version to ask for instead when the
   * heartbeat carries agent_status_message, or null where the server is older than that.
   */
  async heartbeatFeatures(): Promise<{ version: string; token: boolean; agentVersion: boolean; verifyCa: boolean; statusVersion: string | null }> {
    const max = await this.maxVersion();
    const version = minApiVersion(max, HEARTBEAT_API_VERSION_CAP);
    return {
      version,
      token: compareApiVersions(version, API_VERSION_AGENT_TOKEN) >= 0,
      agentVersion: compareApiVersions(version, API_VERSION_AGENT_VERSION) >= 0,
      verifyCa: compareApiVersions(version, API_VERSION_AGENT_VERIFY_CA) >= 0,
      statusVersion: compareApiVersions(max, API_VERSION_HEARTBEAT_STATUS) >= 0 ? API_VERSION_HEARTBEAT_STATUS : null,
    };
  }

  async heartbeat(nodeUuid: string, body: HeartbeatBody, version: string): Promise<void> {
    await this.call('POST', `/v1/heartbeat/${encodeURIComponent(nodeUuid)}`, version, JSON.stringify(body), [202]);
  }

  /** Forget the discovered version (e.g. after Ironic was restarted, possibly upgraded). */
  forgetVersion(): void {
    if (!this.opts.forcedVersion) this.serverVersion = null;
  }

  private async call(
    method: 'GET' | 'POST',
    path: string,
    version: string | null,
    body: string | null,
    ok: number[],
  ): Promise<{ status: number; body: string }> {
    const headers: Record<string, string> = { accept: 'application/json', 'content-type': 'application/json' };
    if (version) headers[API_VERSION_HEADER] = version;
    if (this.opts.globalRequestId) headers[REQUEST_ID_HEADER] = this.opts.globalRequestId;
    let lastError: unknown = null;
    // On connection failures try each configured API URL in turn, starting with the one that worked.
    for (let i = 0; i < this.opts.apiUrls.length; i++) {
      const index = (this.current + i) % this.opts.apiUrls.length;
      const url = `${this.opts.apiUrls[index]}${path}`;
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, { method, headers, body, dispatcher: this.dispatcher });
      } catch (err) {
        lastError = new IronicConnectionError(url, err);
        continue;
      }
      this.current = index;
      const text = await res.body.text();
      if (!ok.includes(res.statusCode)) throw new IronicHttpError(res.statusCode, ironicFaultString(text), url);
      return { status: res.statusCode, body: text };
    }
    throw lastError ?? new Error('no Ironic API URL configured');
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}
