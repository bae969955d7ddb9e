import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, DEFAULTS, OPTIONS, buildConfig, loadConfig, type Config, type ConfigSources } from '../../src/agent/config.js';

const API = 'ipa-api-url=http://10.0.0.1:6385';

/** The problems buildConfig reports (fails the test if it does not throw a ConfigError). */
function problems(sources: ConfigSources): string[] {
  try {
    buildConfig(sources);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}

const kernel = (cmdline: string): Config => buildConfig({ cmdline: `${API} ${cmdline}` });
const kernelProblems = (cmdline: string): string[] => problems({ cmdline: `${API} ${cmdline}` });

describe('buildConfig: defaults and the kernel command line', () => {
  it('sends the heartbeat status message unless ferrum-heartbeat-status-message turns it off', () => {
    expect(kernel('').heartbeatStatusMessage).toBe(true);
    expect(kernel('ferrum-heartbeat-status-message=0').heartbeatStatusMessage).toBe(false);
    expect(kernelProblems('ferrum-heartbeat-status-message=maybe').join()).toMatch(/heartbeat-status-message.*boolean/);
  });

  it('gives the IPA 9.4.3 defaults when only the API URL is set', () => {
    expect(buildConfig({ cmdline: API })).toEqual({ ...DEFAULTS, apiUrls: ['http://10.0.0.1:6385'] });
    expect(DEFAULTS).toMatchObject({
      listenPort: 9999,
      advertisePort: 9999,
      advertiseProtocol: 'http',
      ipLookupAttempts: 6,
      ipLookupSleep: 10,
      lookupTimeout: 300,
      lookupInterval: 1,
      lookupMaxInterval: 60,
      inspectionCollectors: ['default', 'logs'],
      inspectionDhcpWaitTimeout: 60,
      lldpTimeout: 30,
      diskWaitAttempts: 10,
      diskWaitDelay: 3,
      imageDownloadConnectionTimeout: 60,
      imageDownloadRetries: 9,
      imageDownloadRetryInterval: 10,
      enableAutoTls: true,
      guardSpecialFilesystems: true,
      insecure: false,
      power: 'real',
    });
  });

  it('reads what Ironic puts on a PXE and a virtual-media kernel line', () => {
    const c = buildConfig({
      cmdline:
        'selinux=0 troubleshoot=0 text nofb nomodeset vga=normal ipa-api-url=http://192.168.24.2:6385 ' +
        'ipa-global-request-id=req-5f0f3a7e ipa-debug=1 BOOTIF=01-52-54-00-12-34-56 boot_method=vmedia ' +
        'ipa-agent-token=p3yx2Xb0sIgN9wq4H6vLrTqYk1eZcJmA8uD5fWoR7sE ipa-inspection-callback-url=http://192.168.24.2:5050/v1/continue',
    });
    expect(c.apiUrls).toEqual(['http://192.168.24.2:6385']);
    expect(c.globalRequestId).toBe('req-5f0f3a7e');
    expect(c.debug).toBe(true);
    expect(c.bootif).toBe('01-52-54-00-12-34-56');
    expect(c.bootMethod).toBe('vmedia');
    expect(c.agentToken).toBe('p3yx2Xb0sIgN9wq4H6vLrTqYk1eZcJmA8uD5fWoR7sE');
    expect(c.inspectionCallbackUrl).toBe('http://192.168.24.2:5050/v1/continue');
  });

  it('maps the IPA kernel parameter names to the right options', () => {
    const c = kernel(
      [
        'ipa-inspection-collectors=default,pci-devices',
        'ipa-inspection-dhcp-wait-timeout=0',
        'ipa-listen-host=0.0.0.0',
        'ipa-listen-port=8999',
        'ipa-advertise-host=10.0.0.15',
        'ipa-advertise-port=443',
        'ipa-advertise-protocol=https',
        'ipa-network-interface=eno1',
        'ipa-ip-lookup-attempts=3',
        'ipa-ip-lookup-timeout=2',
        'ipa-lookup-timeout=600',
        'ipa-lookup-interval=2',
        'ferrum-lookup-max-interval=30',
        'ipa-insecure=1',
        'ipa-agent-token-required=true',
        'ipa-ironic-api-version=1.68',
        'ipa-standalone=0',
        'ipa-enable-auto-tls=0',
        'ipa-disk-wait-attempts=5',
        'ipa-disk-wait-delay=1.5',
        'ipa-hardware-initialization-delay=4',
        'ipa-ntp-server=pool.ntp.org',
        'ipa-collect-lldp=yes',
        'ipa-lldp-timeout=10.5',
        'ipa-ignore-bootloader-failure=on',
        'ipa-inject-files-priority=42',
        'ipa-guard-special-filesystems=off',
        'ipa-image-download-connection-timeout=30',
        'ipa-image-download-connection-retries=2',
        'ipa-image-download-connection-retry-interval=7',
        'ferrum-state-dir=/tmp/ferrum-state',
        'ferrum-sys-root=/tmp/fake-root',
      ].join(' '),
    );
    expect(c).toMatchObject({
      inspectionCollectors: ['default', 'pci-devices'],
      inspectionDhcpWaitTimeout: 0,
      listenHost: '0.0.0.0',
      listenPort: 8999,
      advertiseHost: '10.0.0.15',
      advertisePort: 443,
      advertiseProtocol: 'https',
      networkInterface: 'eno1',
      ipLookupAttempts: 3,
      ipLookupSleep: 2,
      lookupTimeout: 600,
      lookupInterval: 2,
      lookupMaxInterval: 30,
      insecure: true,
      agentTokenRequired: true,
      ironicApiVersion: '1.68',
      standalone: false,
      enableAutoTls: false,
      diskWaitAttempts: 5,
      diskWaitDelay: 1.5,
      hardwareInitializationDelay: 4,
      ntpServer: 'pool.ntp.org',
      collectLldp: true,
      lldpTimeout: 10.5,
      ignoreBootloaderFailure: true,
      injectFilesPriority: 42,
      guardSpecialFilesystems: false,
      imageDownloadConnectionTimeout: 30,
      imageDownloadRetries: 2,
      imageDownloadRetryInterval: 7,
      stateDir: '/tmp/ferrum-state',
      sysRoot: '/tmp/fake-root',
    });
  });

  it('lets a later duplicate kernel parameter win', () => {
    expect(kernel('ipa-lookup-timeout=10 ipa-lookup-timeout=20').lookupTimeout).toBe(20);
  });

  it('ignores unknown kernel parameters', () => {
    expect(kernel('ipa-something-new=1 console=ttyS0 quiet')).toEqual(kernel(''));
  });

  it('every option has a unique name, and every kernel name belongs to one option', () => {
    const names = OPTIONS.map((o) => o.name);
    expect(new Set(names).size).toBe(names.length);
    const kernelNames = OPTIONS.flatMap((o) => o.kernel ?? []);
    expect(new Set(kernelNames).size).toBe(kernelNames.length);
    for (const o of OPTIONS) expect(Object.keys(DEFAULTS)).toContain(o.key);
  });
});

describe('buildConfig: value conversion', () => {
  it.each([
    ['1', true],
    ['true', true],
    ['TRUE', true],
    ['yes', true],
    ['Yes', true],
    ['on', true],
    ['0', false],
    ['false', false],
    ['False', false],
    ['no', false],
    ['off', false],
    ['OFF', false],
  ])('boolean %s → %s', (raw, expected) => {
    expect(kernel(`ipa-insecure=${raw}`).insecure).toBe(expected);
    expect(buildConfig({ cmdline: API, env: { FERRUM_INSECURE: ` ${raw} ` } }).insecure).toBe(expected);
  });

  it.each(['2', 'y', 'n', 'enabled', ''])('rejects the boolean spelling "%s"', (raw) => {
    expect(kernelProblems(`ipa-collect-lldp=${raw}`)).toEqual([
      `ipa-collect-lldp=${raw} (kernel command line): expected a boolean (1/0, true/false, yes/no, on/off)`,
    ]);
  });

  it('converts integers and rejects non-integers and negatives', () => {
    expect(kernel('ipa-ip-lookup-attempts=12').ipLookupAttempts).toBe(12);
    expect(kernel('ipa-ip-lookup-attempts=0').ipLookupAttempts).toBe(0);
    expect(kernelProblems('ipa-ip-lookup-attempts=abc')).toEqual(['ipa-ip-lookup-attempts=abc (kernel command line): expected an integer']);
    expect(kernelProblems('ipa-ip-lookup-attempts=1.5')).toEqual(['ipa-ip-lookup-attempts=1.5 (kernel command line): expected an integer']);
    expect(kernelProblems('ipa-ip-lookup-attempts=-3')).toEqual([
      'ipa-ip-lookup-attempts=-3 (kernel command line): expected a non-negative integer',
    ]);
  });

  it.each([
    ['300', 300],
    ['0', 0],
    ['2.5', 2.5],
    ['.5', 0.5],
    ['5.', 5],
    ['1e2', 100],
    ['+7', 7],
  ])('converts the number %s', (raw, expected) => {
    expect(kernel(`ipa-lookup-timeout=${raw}`).lookupTimeout).toBe(expected);
  });

  it.each(['soon', '', '0x10', '0b11', '1_000', 'inf', 'Infinity', 'NaN', '1,5'])('rejects "%s" as a number', (raw) => {
    expect(kernelProblems(`ipa-lookup-timeout=${raw}`)).toEqual([`ipa-lookup-timeout=${raw} (kernel command line): expected a number`]);
  });

  it('rejects negative numbers', () => {
    expect(kernelProblems('ipa-lookup-interval=-1')).toEqual([
      'ipa-lookup-interval=-1 (kernel command line): expected a non-negative number',
    ]);
  });

  it('checks ports are 1-65535', () => {
    expect(kernel('ipa-listen-port=1').listenPort).toBe(1);
    expect(kernel('ipa-listen-port=65535').listenPort).toBe(65535);
    for (const bad of ['0', '65536', 'http', '99.5', '-1']) {
      expect(kernelProblems(`ipa-listen-port=${bad}`)).toEqual([`ipa-listen-port=${bad} (kernel command line): expected a port number 1-65535`]);
    }
  });

  it('checks choices', () => {
    expect(kernelProblems('ipa-advertise-protocol=ftp')).toEqual(['ipa-advertise-protocol=ftp (kernel command line): expected one of http, https']);
    expect(kernelProblems('ferrum-power=off')).toEqual(['ferrum-power=off (kernel command line): expected one of real, none']);
  });

  it('splits comma lists, trimming and dropping empty entries; empty means unset', () => {
    expect(kernel('ferrum-interfaces=veth0,,veth1,').interfaces).toEqual(['veth0', 'veth1']);
    expect(buildConfig({ cmdline: API, env: { FERRUM_INTERFACES: ' veth0 , veth1 ' } }).interfaces).toEqual(['veth0', 'veth1']);
    expect(kernel('ferrum-interfaces=').interfaces).toBeNull();
  });

  it('turns an empty string option into null (unset)', () => {
    expect(kernel('ipa-agent-token=').agentToken).toBeNull();
    expect(kernel('ipa-agent-token=abc ipa-agent-token=').agentToken).toBeNull();
  });

  it('refuses to empty an option that must have a value', () => {
    expect(kernelProblems('ferrum-state-dir=')).toEqual(['ferrum-state-dir= (kernel command line): a value is required']);
    expect(kernelProblems('ferrum-sys-root=')).toEqual(['ferrum-sys-root= (kernel command line): a value is required']);
    expect(kernelProblems('ipa-listen-host=')).toEqual(['ipa-listen-host= (kernel command line): a value is required']);
    expect(kernelProblems('ipa-inspection-collectors=')).toEqual([
      'ipa-inspection-collectors= (kernel command line): a value is required',
    ]);
  });

  it('checks API versions', () => {
    expect(kernel('ipa-ironic-api-version=1.62').ironicApiVersion).toBe('1.62');
    for (const bad of ['1', 'v1.2', 'latest', '1.2.3']) {
      expect(kernelProblems(`ipa-ironic-api-version=${bad}`)).toEqual([
        `ipa-ironic-api-version=${bad} (kernel command line): expected a version like 1.68`,
      ]);
    }
  });

  it('accepts IP addresses (IPv6 brackets removed) and host names', () => {
    expect(kernel('ipa-advertise-host=[fd00::15]').advertiseHost).toBe('fd00::15');
    expect(kernel('ipa-advertise-host=fd00::15').advertiseHost).toBe('fd00::15');
    expect(kernel('ipa-advertise-host=agent-1.example.org').advertiseHost).toBe('agent-1.example.org');
    expect(kernel('ipa-listen-host=::').listenHost).toBe('::');
    expect(kernelProblems('ipa-advertise-host=bad_host!')).toEqual([
      'ipa-advertise-host=bad_host! (kernel command line): expected an IP address or host name',
    ]);
  });
});

describe('buildConfig: URLs', () => {
  it('accepts a comma list of http(s) URLs and strips trailing slashes', () => {
    const c = buildConfig({ cmdline: 'ipa-api-url=http://10.0.0.1:6385/,https://[fd00::1]:6385//' });
    expect(c.apiUrls).toEqual(['http://10.0.0.1:6385', 'https://[fd00::1]:6385']);
  });

  it('rejects mdns with a clear message, wherever it appears', () => {
    const msg = 'mDNS discovery is not supported by Ferrum; give an http(s) URL';
    expect(problems({ cmdline: 'ipa-standalone=1 ipa-api-url=mdns' })).toEqual([`ipa-api-url=mdns (kernel command line): ${msg}`]);
    expect(problems({ cmdline: 'ipa-standalone=1 ipa-api-url=http://a:6385,mdns' })).toEqual([
      `ipa-api-url=http://a:6385,mdns (kernel command line): ${msg}`,
    ]);
    expect(problems({ cmdline: API, env: { FERRUM_API_URL: 'mdns' } })).toEqual([`FERRUM_API_URL=mdns (environment): ${msg}`]);
    expect(kernelProblems('ipa-inspection-callback-url=mdns')).toEqual([`ipa-inspection-callback-url=mdns (kernel command line): ${msg}`]);
  });

  it('rejects other schemes and things that are not URLs', () => {
    expect(problems({ cmdline: 'ipa-api-url=ftp://10.0.0.1/' })).toContain(
      'ipa-api-url=ftp://10.0.0.1/ (kernel command line): "ftp://10.0.0.1/" must be http:// or https://',
    );
    expect(problems({ cmdline: 'ipa-api-url=10.0.0.1:6385' })[0]).toMatch(/must be http:\/\/ or https:\/\/|is not a URL/);
    expect(problems({ cmdline: 'ipa-api-url=not-a-url' })[0]).toBe('ipa-api-url=not-a-url (kernel command line): "not-a-url" is not a URL');
    expect(kernelProblems('ipa-inspection-callback-url=file:///etc/passwd')).toEqual([
      'ipa-inspection-callback-url=file:///etc/passwd (kernel command line): "file:///etc/passwd" must be http:// or https://',
    ]);
  });

  it('keeps the inspection callback URL as given', () => {
    expect(kernel('ipa-inspection-callback-url=https://insp:5050/v1/continue').inspectionCallbackUrl).toBe('https://insp:5050/v1/continue');
  });
});

describe('buildConfig: Ferrum parameters', () => {
  it('keeps BOOTIF verbatim (pxelinux and iPXE forms)', () => {
    expect(kernel('BOOTIF=01-aa-bb-cc-dd-ee-ff').bootif).toBe('01-aa-bb-cc-dd-ee-ff');
    expect(kernel('BOOTIF=AA:BB:CC:DD:EE:FF').bootif).toBe('AA:BB:CC:DD:EE:FF');
  });

  it('reads ferrum-devices, ferrum-interfaces and ferrum-power', () => {
    const c = kernel('ferrum-devices=/dev/loop3,/dev/disk/by-id/wwn-0x5000c500a1b2c3d4 ferrum-interfaces=veth-agent ferrum-power=none');
    expect(c.devices).toEqual(['/dev/loop3', '/dev/disk/by-id/wwn-0x5000c500a1b2c3d4']);
    expect(c.interfaces).toEqual(['veth-agent']);
    expect(c.power).toBe('none');
  });

  it('rejects devices that are not /dev paths', () => {
    expect(kernelProblems('ferrum-devices=sda,/dev/loop3,/dev/../etc/shadow,/tmp/disk.img')).toEqual([
      'devices: "sda" is not a /dev path',
      'devices: "/dev/../etc/shadow" is not a /dev path',
      'devices: "/tmp/disk.img" is not a /dev path',
    ]);
  });
});

describe('buildConfig: cross checks', () => {
  it('needs an API URL unless standalone (or inspection only)', () => {
    expect(problems({})).toEqual([
      'no Ironic API: give ipa-api-url (kernel), api_url (config file), --api-url, or run with --standalone',
    ]);
    expect(buildConfig({ cmdline: 'ipa-standalone=1' }).standalone).toBe(true);
    expect(buildConfig({ flags: new Map([['standalone', 'true']]) }).apiUrls).toEqual([]);
    expect(buildConfig({ cmdline: 'ipa-inspection-callback-url=http://insp:5050/v1/continue' }).apiUrls).toEqual([]);
  });

  it('needs cert_file and key_file for listen_tls', () => {
    const file = (text: string) => ({ cmdline: API, configFile: { path: '/etc/ferrum/agent.conf', text } });
    expect(problems(file('listen_tls = true'))).toEqual(['listen_tls needs cert_file and key_file']);
    expect(problems(file('listen_tls = true\ncert_file = /etc/ferrum/agent.crt'))).toEqual(['listen_tls needs cert_file and key_file']);
    const ok = buildConfig(file('listen_tls = true\ncert_file = /etc/ferrum/agent.crt\nkey_file = /etc/ferrum/agent.key'));
    expect(ok).toMatchObject({ listenTls: true, certFile: '/etc/ferrum/agent.crt', keyFile: '/etc/ferrum/agent.key' });
  });

  it('needs lookup_max_interval >= lookup_interval', () => {
    expect(kernelProblems('ipa-lookup-interval=10 ferrum-lookup-max-interval=5')).toEqual([
      'lookup_max_interval must be >= lookup_interval',
    ]);
  });

  it('reports every problem at once, conversion problems first', () => {
    const p = problems({ cmdline: 'ipa-listen-port=0 ipa-debug=maybe ferrum-devices=sda' });
    expect(p).toEqual([
      'ipa-listen-port=0 (kernel command line): expected a port number 1-65535',
      'ipa-debug=maybe (kernel command line): expected a boolean (1/0, true/false, yes/no, on/off)',
      'devices: "sda" is not a /dev path',
      'no Ironic API: give ipa-api-url (kernel), api_url (config file), --api-url, or run with --standalone',
    ]);
    try {
      buildConfig({ cmdline: 'ipa-listen-port=0', flags: new Map([['standalone', 'true']]) });
    } catch (err) {
      expect((err as Error).message).toBe('invalid configuration:\n  ipa-listen-port=0 (kernel command line): expected a port number 1-65535');
    }
  });
});

describe('buildConfig: sources and precedence', () => {
  const file = (text: string) => ({ path: '/etc/ferrum/agent.conf', text });

  it('cmdline < config file < FERRUM_* env < flags', () => {
    const all: ConfigSources = {
      cmdline: `${API} ipa-lookup-timeout=10`,
      configFile: file('[DEFAULT]\nlookup_timeout = 20\n'),
      env: { FERRUM_LOOKUP_TIMEOUT: '30' },
      flags: new Map([['lookup_timeout', '40']]),
    };
    expect(buildConfig(all).lookupTimeout).toBe(40);
    expect(buildConfig({ ...all, flags: new Map() }).lookupTimeout).toBe(30);
    expect(buildConfig({ ...all, flags: new Map(), env: {} }).lookupTimeout).toBe(20);
    expect(buildConfig({ cmdline: all.cmdline }).lookupTimeout).toBe(10);
    // Each layer only overrides what it sets.
    const mixed = buildConfig({
      cmdline: `${API} ipa-lookup-timeout=10 ipa-lookup-interval=3 ipa-debug=1`,
      configFile: file('lookup_interval = 4\ndebug = false'),
      env: { FERRUM_DEBUG: 'true' },
    });
    expect(mixed).toMatchObject({ lookupTimeout: 10, lookupInterval: 4, debug: true });
  });

  it('names the source of a bad value: kernel, config file, environment, flag', () => {
    expect(
      problems({
        cmdline: `${API} ipa-lookup-timeout=x1`,
        configFile: file('lookup_timeout = x2'),
        env: { FERRUM_LOOKUP_TIMEOUT: 'x3' },
        flags: new Map([['lookup_timeout', 'x4']]),
      }),
    ).toEqual([
      'ipa-lookup-timeout=x1 (kernel command line): expected a number',
      'lookup_timeout = x2 (/etc/ferrum/agent.conf): expected a number',
      'FERRUM_LOOKUP_TIMEOUT=x3 (environment): expected a number',
      '--lookup-timeout=x4 (command line): expected a number',
    ]);
  });

  it('a later good value does not hide an earlier bad one', () => {
    expect(problems({ cmdline: `${API} ipa-listen-port=none`, flags: new Map([['listen_port', '9000']]) })).toEqual([
      'ipa-listen-port=none (kernel command line): expected a port number 1-65535',
    ]);
  });

  it('reads the config file [DEFAULT] section only and rejects unknown keys there', () => {
    const c = buildConfig({
      cmdline: API,
      configFile: file('[DEFAULT]\ninsecure = yes\n[disk_utils]\ndd_block_size = 4M\nbogus = 1\n'),
    });
    expect(c.insecure).toBe(true);
    expect(problems({ cmdline: API, configFile: file('[DEFAULT]\nlookup_timout = 5\n') })).toEqual([
      '/etc/ferrum/agent.conf: unknown option "lookup_timout"',
    ]);
  });

  it('turns an INI syntax error into a ConfigError naming the file and line', () => {
    expect(problems({ cmdline: API, configFile: file('[DEFAULT]\ndebug = true\njust words\n') })).toEqual([
      '/etc/ferrum/agent.conf: line 3: expected "key = value", got "just words"',
    ]);
  });

  it('reads every option from FERRUM_<NAME> and ignores other variables', () => {
    const c = buildConfig({
      env: {
        FERRUM_API_URL: 'http://ironic:6385',
        FERRUM_ADVERTISE_HOST: '10.0.0.2',
        FERRUM_DEVICES: '/dev/loop7',
        FERRUM_POWER: 'none',
        FERRUM_UNRELATED: 'x',
        PATH: '/usr/bin',
      },
    });
    expect(c).toMatchObject({ apiUrls: ['http://ironic:6385'], advertiseHost: '10.0.0.2', devices: ['/dev/loop7'], power: 'none' });
  });

  it('rejects unknown flags', () => {
    expect(problems({ cmdline: API, flags: new Map([['lookup_timout', '3']]) })).toEqual(['--lookup-timout: unknown option']);
  });
});

describe('loadConfig', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferrum-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  it('reads --cmdline-file and --config-file, then env and the other flags', () => {
    const cmdline = write('cmdline', `BOOT_IMAGE=/vmlinuz ${API} ipa-lookup-timeout=10 ipa-lookup-interval=2 ipa-debug=1\n`);
    const conf = write('agent.conf', '[DEFAULT]\nlookup_timeout = 20\nadvertise_host = 10.1.1.1\n');
    const c = loadConfig(
      new Map([
        ['cmdline_file', cmdline],
        ['config_file', conf],
        ['listen_port', '8999'],
      ]),
      { FERRUM_ADVERTISE_HOST: '10.2.2.2' },
    );
    expect(c).toMatchObject({
      apiUrls: ['http://10.0.0.1:6385'],
      lookupTimeout: 20,
      lookupInterval: 2,
      debug: true,
      advertiseHost: '10.2.2.2',
      listenPort: 8999,
    });
  });

  it('names a config file given through FERRUM_CONFIG_FILE', () => {
    const cmdline = write('cmdline-empty', 'quiet\n');
    const conf = write('env.conf', 'api_url = http://env-file:6385\n');
    expect(loadConfig(new Map([['cmdline_file', cmdline]]), { FERRUM_CONFIG_FILE: conf }).apiUrls).toEqual(['http://env-file:6385']);
  });

  it('fails on a missing --cmdline-file or a missing named config file', () => {
    const cmdline = write('cmdline-ok', API);
    const missing = join(dir, 'does-not-exist');
    expect(() => loadConfig(new Map([['cmdline_file', missing]]), {})).toThrow(ConfigError);
    expect(() => loadConfig(new Map([['cmdline_file', missing]]), {})).toThrow(`--cmdline-file ${missing}: ENOENT`);
    expect(() => loadConfig(new Map([['cmdline_file', cmdline], ['config_file', missing]]), {})).toThrow(`config file ${missing}: ENOENT`);
    expect(() => loadConfig(new Map([['cmdline_file', cmdline]]), { FERRUM_CONFIG_FILE: missing })).toThrow(`config file ${missing}: ENOENT`);
  });

  it('reports bad values in the files with their source', () => {
    const cmdline = write('cmdline-bad', `${API} ipa-listen-port=99999`);
    const conf = write('bad.conf', 'lookup_interval = fast\n');
    try {
      loadConfig(new Map([['cmdline_file', cmdline], ['config_file', conf]]), {});
      expect.fail('expected a ConfigError');
    } catch (err) {
      expect((err as ConfigError).problems).toEqual([
        'ipa-listen-port=99999 (kernel command line): expected a port number 1-65535',
        `lookup_interval = fast (${conf}): expected a number`,
      ]);
    }
  });
});
