// A real HTTP server on 127.0.0.1 playing Ironic's ramdisk endpoints for the agent's client:
// every request is recorded; the test decides each answer.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  body: string;
  /** Date.now() when the request arrived. */
  at: number;
}

export interface Reply {
  status: number;
  /** JSON-encoded unless `raw` is given. */
  json?: unknown;
  raw?: string;
}

export type Handler = (req: RecordedRequest) => Reply | Promise<Reply>;

/** Ironic's GET / document (21.4.4 shape, trimmed). */
export function ironicRoot(version: string): Reply {
  return {
    status: 200,
    json: {
      name: 'OpenStack Ironic API',
      description: 'Ironic is an OpenStack project which enables the provision and management of baremetal machines.',
      default_version: {
        id: 'v1',
        links: [{ href: 'http://127.0.0.1/v1/', rel: 'self' }],
        status: 'CURRENT',
        min_version: '1.1',
        version,
      },
      versions: [{ id: 'v1', links: [{ href: 'http://127.0.0.1/v1/', rel: 'self' }], status: 'CURRENT', min_version: '1.1', version }],
    },
  };
}

/** An Ironic error: the body's error_message is itself a JSON document. */
export function ironicError(status: number, faultstring: string): Reply {
  return {
    status,
    json: { error_message: JSON.stringify({ faultcode: status >= 500 ? 'Server' : 'Client', faultstring, debuginfo: null }) },
  };
}

export const NODE_UUID = '9f5c1e2a-3b4d-4c5e-8f60-718293a4b5c6';
export const TOKEN = 'p3yx2Xb0sIgN9wq4H6vLrTqYk1eZcJmA8uD5fWoR7sE'; // 43 url-safe chars, as secrets.token_urlsafe()

/** A 21.4.4 lookup answer (§2 of the protocol reference). */
export function lookupAnswer(overrides: { token?: string | null; heartbeatTimeout?: number; uuid?: string } = {}): Reply {
  const uuid = overrides.uuid ?? NODE_UUID;
  return {
    status: 200,
    json: {
      node: {
        uuid,
        properties: { root_device: { size: '>= 100' }, capabilities: 'boot_mode:uefi' },
        instance_info: { image_url: '******', configdrive: '******' },
        driver_internal_info: { agent_secret_token: '******', is_whole_disk_image: true },
        links: [{ href: `http://127.0.0.1:6385/v1/nodes/${uuid}`, rel: 'self' }],
      },
      config: {
        metrics: { backend: 'noop', prepend_host: false, prepend_uuid: false, prepend_host_reverse: true, global_prefix: null },
        metrics_statsd: { statsd_host: 'localhost', statsd_port: 8125 },
        heartbeat_timeout: overrides.heartbeatTimeout ?? 300,
        agent_token: overrides.token === undefined ? TOKEN : overrides.token,
        agent_token_required: true,
        disable_deep_image_inspection: false,
        permitted_image_formats: ['raw', 'qcow2', 'iso'],
      },
    },
  };
}

export class FakeIronic {
  readonly requests: RecordedRequest[] = [];
  private readonly server: Server;
  private waiters: Array<() => void> = [];

  constructor(private handler: Handler) {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const url = new URL(req.url ?? '/', 'http://localhost');
        const rec: RecordedRequest = {
          method: req.method ?? 'GET',
          path: url.pathname,
          query: url.searchParams,
          headers: req.headers,
          body: Buffer.concat(chunks).toString('utf8'),
          at: Date.now(),
        };
        this.requests.push(rec);
        Promise.resolve()
          .then(() => this.handler(rec))
          .then(
            (reply) => {
              const body = reply.raw ?? (reply.json === undefined ? '' : JSON.stringify(reply.json));
              res.writeHead(reply.status, { 'content-type': 'application/json' });
              res.end(body);
            },
            (err: unknown) => {
              res.writeHead(599);
              res.end(String(err));
            },
          )
          .finally(() => {
            const w = this.waiters;
            this.waiters = [];
            w.forEach((f) => f());
          });
      });
    });
  }

  setHandler(handler: Handler): void {
    this.handler = handler;
  }

  async listen(port = 0): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
    return this.url;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Requests to `path` (e.g. "/v1/lookup"), in arrival order. */
  to(path: string): RecordedRequest[] {
    return this.requests.filter((r) => r.path === path);
  }

  /** Resolves once `predicate` holds (checked after every answered request). */
  async waitFor(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('FakeIronic.waitFor: timed out');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 50));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Starts a FakeIronic on a random port. */
export async function startFakeIronic(handler: Handler, port = 0): Promise<FakeIronic> {
  const f = new FakeIronic(handler);
  await f.listen(port);
  return f;
}

/** A port nothing listens on (bound, then released). */
export async function unusedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
