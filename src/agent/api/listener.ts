// Owns the listening socket of the command API. The listener can be re-opened with TLS once the
// conductor is known to accept agent_verify_ca (API >= 1.68); state lives outside, so nothing is lost.
import type { FastifyInstance } from 'fastify';
import { buildApi, type ApiDeps, type TlsMaterial } from './server.js';

export class ApiListener {
  private app: FastifyInstance | null = null;
  private current: TlsMaterial | null = null;
  boundAddress: string | null = null;

  constructor(
    private readonly deps: ApiDeps,
    private readonly host: string,
    private readonly port: number,
  ) {}

  get tls(): TlsMaterial | null {
    return this.current;
  }

  get protocol(): 'http' | 'https' {
    return this.current ? 'https' : 'http';
  }

  async listen(tls: TlsMaterial | null): Promise<void> {
    if (this.app && this.current?.cert === tls?.cert) return;
    await this.close();
    const app = buildApi(this.deps, tls);
    try {
      this.boundAddress = await app.listen({ host: this.host, port: this.port });
    } catch (err) {
      // IPA's default "::" falls back to IPv4 on hosts without IPv6.
      const code = (err as NodeJS.ErrnoException).code;
      if (this.host !== '::' || (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL')) throw err;
      this.boundAddress = await app.listen({ host: '0.0.0.0', port: this.port });
    }
    this.app = app;
    this.current = tls;
    this.deps.log.info({ address: this.boundAddress, tls: tls !== null }, 'command API listening');
  }

  async close(): Promise<void> {
    if (!this.app) return;
    const app = this.app;
    this.app = null;
    await app.close();
  }
}
