import { X509Certificate, createPrivateKey, webcrypto } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { afterAll, describe, expect, it } from 'vitest';
import { certificateFits, generateSelfSigned, loadOrCreateCertificate } from '../../src/agent/tls.js';
import { silentLogger } from '../../src/agent/log.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

describe('generateSelfSigned', async () => {
  const before = Date.now();
  const pair = await generateSelfSigned('10.0.0.15', 'node-0.example.org');
  const after = Date.now();
  const cert = new X509Certificate(pair.cert);

  it('is PEM with a matching P-256 key', () => {
    expect(pair.cert).toMatch(/^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----\n/);
    expect(pair.key).toMatch(/^-----BEGIN PRIVATE KEY-----\n([A-Za-z0-9+/=]{1,64}\n)+-----END PRIVATE KEY-----\n$/);
    const key = createPrivateKey(pair.key);
    expect(key.asymmetricKeyType).toBe('ec');
    expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(cert.checkPrivateKey(key)).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('has the advertised IP as its only SAN, and CN = hostname', () => {
    expect(cert.subjectAltName).toBe('IP Address:10.0.0.15');
    expect(cert.subject).toBe('CN=node-0.example.org');
    expect(cert.issuer).toBe(cert.subject); // self-signed
    expect(cert.checkIP('10.0.0.15')).toBe('10.0.0.15');
    expect(cert.checkIP('10.0.0.16')).toBeUndefined();
    expect(cert.verify(cert.publicKey)).toBe(true);
  });

  it('marks the SAN critical and signs with ECDSA SHA-256', () => {
    const parsed = new x509.X509Certificate(pair.cert);
    const san = parsed.getExtension(x509.SubjectAlternativeNameExtension);
    expect(san?.critical).toBe(true);
    expect(san?.names.items.map((n) => [n.type, n.value])).toEqual([['ip', '10.0.0.15']]);
    expect(parsed.signatureAlgorithm).toMatchObject({ name: 'ECDSA', hash: { name: 'SHA-256' } });
  });

  it('is valid from an hour ago for 30 days', () => {
    const from = Date.parse(cert.validFrom);
    const to = Date.parse(cert.validTo);
    // X.509 times have second precision.
    expect(from).toBeGreaterThanOrEqual(before - HOUR - 1000);
    expect(from).toBeLessThanOrEqual(after - HOUR);
    expect(to).toBeGreaterThanOrEqual(before + 30 * DAY - 1000);
    expect(to).toBeLessThanOrEqual(after + 30 * DAY);
  });

  it('uses a positive serial number, different every time', async () => {
    const other = new X509Certificate((await generateSelfSigned('10.0.0.15', 'node-0')).cert);
    expect(cert.serialNumber).not.toBe(other.serialNumber);
    expect(cert.serialNumber).toMatch(/^[0-7][0-9A-F]{31}$/);
  });

  it('supports IPv6 and host-name SANs, and sanitises the CN', async () => {
    const v6 = new X509Certificate((await generateSelfSigned('fd00::15', 'a,b=c')).cert);
    expect(v6.subjectAltName).toBe('IP Address:FD00:0:0:0:0:0:0:15');
    expect(v6.checkIP('fd00::15')).toBeDefined();
    expect(v6.subject).toBe('CN=a_b_c');
    const dns = new X509Certificate((await generateSelfSigned('agent.example.org', '')).cert);
    expect(dns.subjectAltName).toBe('DNS:agent.example.org');
    expect(dns.subject).toBe('CN=ferrum');
  });

  it('certificateFits: same address and valid for more than a day', async () => {
    expect(certificateFits(pair.cert, '10.0.0.15')).toBe(true);
    expect(certificateFits(pair.cert, '10.0.0.16')).toBe(false);
    expect(certificateFits(pair.cert, 'node-0.example.org')).toBe(false);
    expect(certificateFits('not a certificate', '10.0.0.15')).toBe(false);
    expect(certificateFits(pair.key, '10.0.0.15')).toBe(false);
    const dns = await generateSelfSigned('agent.example.org', 'x');
    expect(certificateFits(dns.cert, 'agent.example.org')).toBe(true);
    expect(certificateFits(dns.cert, 'other.example.org')).toBe(false);
  });

  it('certificateFits: not when it expires within a day', async () => {
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
    const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const make = async (hoursLeft: number) =>
      (
        await x509.X509CertificateGenerator.createSelfSigned({
          serialNumber: '01',
          name: 'CN=x',
          notBefore: new Date(Date.now() - HOUR),
          notAfter: new Date(Date.now() + hoursLeft * HOUR),
          signingAlgorithm: alg,
          keys,
          extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '10.0.0.15' }], true)],
        })
      ).toString('pem');
    expect(certificateFits(await make(23), '10.0.0.15')).toBe(false);
    expect(certificateFits(await make(25), '10.0.0.15')).toBe(true);
  });
});

describe('loadOrCreateCertificate', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferrum-tls-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('creates agent.crt/agent.key (key 0600), reuses them while they fit, replaces them when the address changes', async () => {
    const state = join(dir, 'state');
    const first = await loadOrCreateCertificate(state, '10.0.0.15', 'node-0', silentLogger());
    expect(readFileSync(join(state, 'agent.crt'), 'utf8')).toBe(first.cert);
    expect(readFileSync(join(state, 'agent.key'), 'utf8')).toBe(first.key);
    expect(statSync(join(state, 'agent.key')).mode & 0o777).toBe(0o600);
    const again = await loadOrCreateCertificate(state, '10.0.0.15', 'node-0', silentLogger());
    expect(again).toEqual(first);
    const moved = await loadOrCreateCertificate(state, '10.0.0.16', 'node-0', silentLogger());
    expect(moved.cert).not.toBe(first.cert);
    expect(new X509Certificate(moved.cert).subjectAltName).toBe('IP Address:10.0.0.16');
    expect(readFileSync(join(state, 'agent.crt'), 'utf8')).toBe(moved.cert);
  });

  it('still returns a certificate when the state directory cannot be written', async () => {
    const blocked = join(dir, 'file');
    await import('node:fs/promises').then((fs) => fs.writeFile(blocked, 'x'));
    const pair = await loadOrCreateCertificate(join(blocked, 'sub'), '10.0.0.15', 'n', silentLogger());
    expect(certificateFits(pair.cert, '10.0.0.15')).toBe(true);
  });
});
