// Auto-TLS: an EC P-256 key and a self-signed certificate whose only SAN is the advertised IP,
// valid from an hour ago for 30 days (as IPA). Kept in the state directory and reused while it
// still fits, so a restarted agent presents the same certificate Ironic stored.
import { webcrypto, X509Certificate } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { Logger } from './log.js';

// Loaded on first use: most runs never need a certificate, and start-up time matters.
let x509Module: Promise<typeof import('@peculiar/x509')> | null = null;
function loadX509(): Promise<typeof import('@peculiar/x509')> {
  x509Module ??= import('@peculiar/x509').then((mod) => {
    // In the esbuild bundle (code splitting) the package's CommonJS build arrives as the default
    // export only: without this the ramdisk's agent crashed on its first auto-TLS certificate.
    const m = 'cryptoProvider' in mod ? mod : (mod as unknown as { default: typeof mod }).default;
    m.cryptoProvider.set(webcrypto as unknown as Parameters<typeof m.cryptoProvider.set>[0]);
    return m;
  });
  return x509Module;
}

export interface TlsPair {
  key: string;
  cert: string;
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

export async function generateSelfSigned(address: string, hostname: string): Promise<TlsPair> {
  const x509 = await loadX509();
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const san = isIP(address) ? { type: 'ip' as const, value: address } : { type: 'dns' as const, value: address };
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1'),
    name: `CN=${hostname.replace(/[,=+<>#;"\\]/g, '_') || 'ferrum'}`,
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + 30 * DAY_MS),
    signingAlgorithm: ALG,
    keys,
    extensions: [new x509.SubjectAlternativeNameExtension([san], true)],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { key: pem('PRIVATE KEY', pkcs8), cert: cert.toString('pem') + '\n' };
}

/** True when `certPem` is for `address` and stays valid for at least a day. */
export function certificateFits(certPem: string, address: string): boolean {
  try {
    const cert = new X509Certificate(certPem);
    if (Date.parse(cert.validTo) - Date.now() < DAY_MS) return false;
    // SAN only: Ironic's TLS client (Python ssl) never falls back to the subject CN.
    return isIP(address) ? cert.checkIP(address) !== undefined : cert.checkHost(address, { subject: 'never' }) !== undefined;
  } catch {
    return false;
  }
}

export async function loadOrCreateCertificate(stateDir: string, address: string, hostname: string, log: Logger): Promise<TlsPair> {
  const certFile = join(stateDir, 'agent.crt');
  const keyFile = join(stateDir, 'agent.key');
  try {
    const [cert, key] = await Promise.all([fs.readFile(certFile, 'utf8'), fs.readFile(keyFile, 'utf8')]);
    if (certificateFits(cert, address)) {
      log.info({ certFile }, 'reusing TLS certificate');
      return { cert, key };
    }
  } catch {
    // none yet
  }
  const pair = await generateSelfSigned(address, hostname);
  try {
    await fs.mkdir(stateDir, { recursive: true, mode: 0o700 });
    await fs.writeFile(keyFile, pair.key, { mode: 0o600 });
    await fs.writeFile(certFile, pair.cert, { mode: 0o644 });
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'could not store the TLS certificate; it will change on restart');
  }
  log.info({ address }, 'generated a self-signed TLS certificate');
  return pair;
}
