import { describe, expect, it } from 'vitest';
import { AdvertiseAddressError, detectAdvertiseHost, formatCallbackUrl, interfaceIpv4, routeSource } from '../../src/agent/advertise.js';
import { silentLogger } from '../../src/agent/log.js';
import { FakeHost, fail, ok } from './support/fake-host.js';

describe('formatCallbackUrl', () => {
  it.each([
    ['http', '10.0.0.15', 9999, 'http://10.0.0.15:9999'],
    ['https', '10.0.0.15', 9999, 'https://10.0.0.15:9999'],
    ['https', 'fd00::15', 9999, 'https://[fd00::15]:9999'],
    ['http', '::1', 8999, 'http://[::1]:8999'],
    ['http', 'fe80::1%eth0', 9999, 'http://[fe80::1%eth0]:9999'],
    ['http', 'agent-1.example.org', 9999, 'http://agent-1.example.org:9999'],
  ] as const)('%s %s %i → %s', (proto, host, port, expected) => {
    expect(formatCallbackUrl(proto, host, port)).toBe(expected);
  });
});

const route = (prefsrc: string) => ok(JSON.stringify([{ dst: '192.168.24.2', gateway: '10.0.0.1', dev: 'eno1', prefsrc, uid: 0, cache: [] }]));

describe('routeSource / interfaceIpv4', () => {
  it('reads the src of `ip -j route get`, ignoring link-local and failures', async () => {
    const host = new FakeHost({ run: () => route('10.0.0.15') });
    expect(await routeSource(host, '192.168.24.2')).toBe('10.0.0.15');
    expect(host.commands[0]).toEqual({ cmd: 'ip', args: ['-j', 'route', 'get', '192.168.24.2'] });
    expect(await routeSource(new FakeHost({ run: () => route('169.254.3.4') }), '192.168.24.2')).toBeNull();
    expect(await routeSource(new FakeHost({ run: () => route('fe80::1') }), 'fd00::2')).toBeNull();
    expect(await routeSource(new FakeHost({ run: () => fail('RTNETLINK answers: Network is unreachable', 2) }), '192.168.24.2')).toBeNull();
    expect(await routeSource(new FakeHost({ run: () => ok('garbage') }), '192.168.24.2')).toBeNull();
  });

  it('reads the first IPv4 of an interface', async () => {
    const host = new FakeHost({
      run: () => ok(JSON.stringify([{ ifname: 'eno1', addr_info: [{ family: 'inet6', local: 'fe80::1' }, { family: 'inet', local: '10.0.0.15', prefixlen: 24 }] }])),
    });
    expect(await interfaceIpv4(host, 'eno1')).toBe('10.0.0.15');
    expect(host.commands[0]!.args).toEqual(['-j', '-4', 'addr', 'show', 'dev', 'eno1']);
    expect(await interfaceIpv4(new FakeHost({ run: () => ok('[{"ifname": "eno1", "addr_info": []}]') }), 'eno1')).toBeNull();
  });
});

describe('detectAdvertiseHost', () => {
  const base = { log: silentLogger(), advertiseHost: null, networkInterface: null, apiUrl: 'http://192.168.24.2:6385', attempts: 3, sleepSec: 0 };

  it('uses the configured advertise host without looking', async () => {
    const host = new FakeHost();
    expect(await detectAdvertiseHost({ ...base, host, advertiseHost: '10.9.9.9' })).toBe('10.9.9.9');
    expect(host.commands).toEqual([]);
  });

  it('takes the route source toward the API host, retrying until there is one', async () => {
    let n = 0;
    const host = new FakeHost({ run: () => (++n < 3 ? fail('Network is unreachable', 2) : route('10.0.0.15')) });
    expect(await detectAdvertiseHost({ ...base, host })).toBe('10.0.0.15');
    expect(n).toBe(3);
  });

  it('strips IPv6 brackets from the API host', async () => {
    const host = new FakeHost({ run: () => route('fd00::15') });
    expect(await detectAdvertiseHost({ ...base, host, apiUrl: 'http://[fd00::2]:6385' })).toBe('fd00::15');
    expect(host.commands[0]!.args).toEqual(['-j', 'route', 'get', 'fd00::2']);
  });

  it('fails with LookupAgentIPError after the attempts', async () => {
    const host = new FakeHost({ run: () => route('169.254.1.1') });
    const err = await detectAdvertiseHost({ ...base, host }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AdvertiseAddressError);
    expect((err as Error).name).toBe('LookupAgentIPError');
    expect((err as Error).message).toBe('Error finding IP for Ironic Agent: no route toward http://192.168.24.2:6385');
    expect(host.commands).toHaveLength(3);
  });

  it('uses the IPv4 of ipa-network-interface when given', async () => {
    const host = new FakeHost({ run: () => ok('[{"ifname": "eno2", "addr_info": [{"family": "inet", "local": "10.1.0.7"}]}]') });
    expect(await detectAdvertiseHost({ ...base, host, networkInterface: 'eno2' })).toBe('10.1.0.7');
    const none = new FakeHost({ run: () => ok('[]') });
    await expect(detectAdvertiseHost({ ...base, host: none, networkInterface: 'eno2', attempts: 1 })).rejects.toThrow(
      'Error finding IP for Ironic Agent: interface eno2 has no IPv4 address',
    );
  });

  it('needs something to go on', async () => {
    await expect(detectAdvertiseHost({ ...base, host: new FakeHost(), apiUrl: null })).rejects.toThrow(AdvertiseAddressError);
  });
});
