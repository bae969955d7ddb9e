import { describe, expect, it } from 'vitest';
import { listInterfaces, normaliseMac } from '../../src/agent/hardware/network-interfaces.js';
import { FakeHost } from './support/fake-host.js';

describe('normaliseMac', () => {
  it.each([
    ['52:54:00:12:34:56', '52:54:00:12:34:56'],
    ['52:54:00:AB:CD:EF', '52:54:00:ab:cd:ef'],
    ['52-54-00-ab-cd-ef', '52:54:00:ab:cd:ef'],
    ['01-52-54-00-ab-cd-ef', '52:54:00:ab:cd:ef'], // pxelinux BOOTIF (ARP type 1 prefix)
    ['01-52-54-00-AB-CD-EF', '52:54:00:ab:cd:ef'],
    ['  3c:ec:ef:12:34:56\n', '3c:ec:ef:12:34:56'], // /sys/class/net/<if>/address ends with a newline
    ['01:23:45:67:89:ab', '01:23:45:67:89:ab'], // a real MAC starting with 01 is kept
  ])('%j → %s', (raw, expected) => {
    expect(normaliseMac(raw)).toBe(expected);
  });

  it.each([
    '',
    'not a mac',
    '52:54:00:12:34',
    '52:54:00:12:34:56:78',
    '02-52-54-00-ab-cd-ef', // only the 01 (Ethernet) prefix is pxelinux
    '52:54:00:12:34:zz',
    '5254.0012.3456',
    '525400123456',
    '80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:a1:b2:c3', // InfiniBand (20 octets)
  ])('rejects %j', (raw) => {
    expect(normaliseMac(raw)).toBeNull();
  });
});

describe('listInterfaces', () => {
  const host = new FakeHost({
    files: {
      '/sys/class/net/lo/address': '00:00:00:00:00:00\n',
      '/sys/class/net/eno1/address': '3C:EC:EF:12:34:56\n',
      '/sys/class/net/eno2/address': '3c:ec:ef:12:34:57\n',
      '/sys/class/net/bond0/address': '3c:ec:ef:12:34:56\n',
      '/sys/class/net/eno1.100/address': '3c:ec:ef:12:34:56\n',
      '/sys/class/net/br0/address': '3c:ec:ef:12:34:58\n',
      '/sys/class/net/veth0/address': 'ae:12:34:56:78:9a\n',
      '/sys/class/net/ib0/address': '80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:a1:b2:c3\n',
      '/sys/class/net/tun0/address': '',
    },
    dirs: [
      '/sys/class/net/eno1/device',
      '/sys/class/net/eno2/device',
      '/sys/class/net/ib0/device',
      '/sys/class/net/bond0/bonding',
      '/sys/class/net/br0/bridge',
      '/sys/class/net/br0/device',
    ],
  });

  it('reports physical NICs, bonds and VLANs with a MAC; never lo, bridges or virtual ones', async () => {
    expect(await listInterfaces(host, null)).toEqual([
      { name: 'bond0', macAddress: '3c:ec:ef:12:34:56' },
      { name: 'eno1', macAddress: '3c:ec:ef:12:34:56' },
      { name: 'eno1.100', macAddress: '3c:ec:ef:12:34:56' },
      { name: 'eno2', macAddress: '3c:ec:ef:12:34:57' },
    ]);
  });

  it('with --interfaces uses exactly those (any kind), skipping ones without a usable MAC', async () => {
    expect(await listInterfaces(host, ['veth0', 'lo', 'missing0', 'eno2'])).toEqual([
      { name: 'veth0', macAddress: 'ae:12:34:56:78:9a' },
      { name: 'eno2', macAddress: '3c:ec:ef:12:34:57' },
    ]);
  });
});
