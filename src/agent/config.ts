// One validated Config from, lowest to highest precedence: defaults, the kernel command line
// (IPA's ipa-* parameters), an IPA-style config file ([DEFAULT] section), FERRUM_* environment
// variables and command-line flags. Every bad value is reported with where it came from.
import { readFileSync, existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { parseKernelCmdline, parseIni } from './cmdline.js';

export type PowerMode = 'real' | 'none';

export interface Config {
  apiUrls: string[];
  inspectionCallbackUrl: string | null;
  inspectionCollectors: string[];
  inspectionDhcpWaitTimeout: number;
  listenHost: string;
  listenPort: number;
  advertiseHost: string | null;
  advertisePort: number;
  advertiseProtocol: 'http' | 'https';
  networkInterface: string | null;
  ipLookupAttempts: number;
  ipLookupSleep: number;
  lookupTimeout: number;
  lookupInterval: number;
  lookupMaxInterval: number;
  insecure: boolean;
  agentToken: string | null;
  agentTokenRequired: boolean;
  globalRequestId: string | null;
  ironicApiVersion: string | null;
  debug: boolean;
  standalone: boolean;
  enableAutoTls: boolean;
  listenTls: boolean;
  certFile: string | null;
  keyFile: string | null;
  diskWaitAttempts: number;
  diskWaitDelay: number;
  hardwareInitializationDelay: number;
  ntpServer: string | null;
  collectLldp: boolean;
  lldpTimeout: number;
  ignoreBootloaderFailure: boolean;
  injectFilesPriority: number;
  guardSpecialFilesystems: boolean;
  imageDownloadConnectionTimeout: number;
  imageDownloadRetries: number;
  imageDownloadRetryInterval: number;
  imageHttpClient: 'auto' | 'undici';
  heartbeatStatusMessage: boolean;
  bootif: string | null;
  bootMethod: string | null;
  devices: string[] | null;
  interfaces: string[] | null;
  power: PowerMode;
  stateDir: string;
  sysRoot: string;
  rescuePasswordFile: string;
}

type Kind = 'string' | 'int' | 'number' | 'bool' | 'list' | 'url-list' | 'url' | 'port' | 'version' | 'host';

interface OptionSpec<K extends keyof Config = keyof Config> {
  key: K;
  /** IPA option name; also the config-file key, the flag (dashes) and the env var (FERRUM_ + upper). */
  name: string;
  kind: Kind;
  /** Kernel parameter names; first is canonical. */
  kernel?: string[];
  choices?: readonly string[];
  help: string;
}

const O = <K extends keyof Config>(o: OptionSpec<K>): OptionSpec<K> => o;

export const OPTIONS: OptionSpec[] = [
  O({ key: 'apiUrls', name: 'api_url', kind: 'url-list', kernel: ['ipa-api-url'], help: 'Ironic API URL(s), comma-separated, tried in order' }),
  O({ key: 'inspectionCallbackUrl', name: 'inspection_callback_url', kind: 'url', kernel: ['ipa-inspection-callback-url'], help: 'in-band inspection endpoint (ironic-inspector /v1/continue)' }),
  O({ key: 'inspectionCollectors', name: 'inspection_collectors', kind: 'list', kernel: ['ipa-inspection-collectors'], help: 'inspection collectors' }),
  O({ key: 'inspectionDhcpWaitTimeout', name: 'inspection_dhcp_wait_timeout', kind: 'number', kernel: ['ipa-inspection-dhcp-wait-timeout'], help: 'seconds to wait for the PXE NIC to get IPv4 before inspection' }),
  O({ key: 'listenHost', name: 'listen_host', kind: 'host', kernel: ['ipa-listen-host'], help: 'address the command API binds to' }),
  O({ key: 'listenPort', name: 'listen_port', kind: 'port', kernel: ['ipa-listen-port'], help: 'port of the command API' }),
  O({ key: 'advertiseHost', name: 'advertise_host', kind: 'host', kernel: ['ipa-advertise-host'], help: 'host in the callback URL (default: source address of the route to the API)' }),
  O({ key: 'advertisePort', name: 'advertise_port', kind: 'port', kernel: ['ipa-advertise-port'], help: 'port in the callback URL' }),
  O({ key: 'advertiseProtocol', name: 'advertise_protocol', kind: 'string', choices: ['http', 'https'], kernel: ['ipa-advertise-protocol'], help: 'protocol in the callback URL' }),
  O({ key: 'networkInterface', name: 'network_interface', kind: 'string', kernel: ['ipa-network-interface'], help: 'advertise the IPv4 address of this NIC' }),
  O({ key: 'ipLookupAttempts', name: 'ip_lookup_attempts', kind: 'int', kernel: ['ipa-ip-lookup-attempts'], help: 'attempts to find the advertise address' }),
  O({ key: 'ipLookupSleep', name: 'ip_lookup_sleep', kind: 'number', kernel: ['ipa-ip-lookup-timeout'], help: 'seconds between advertise address attempts' }),
  O({ key: 'lookupTimeout', name: 'lookup_timeout', kind: 'number', kernel: ['ipa-lookup-timeout'], help: 'seconds to keep retrying lookup before exiting (0 = forever)' }),
  O({ key: 'lookupInterval', name: 'lookup_interval', kind: 'number', kernel: ['ipa-lookup-interval'], help: 'minimum seconds between lookup attempts' }),
  O({ key: 'lookupMaxInterval', name: 'lookup_max_interval', kind: 'number', kernel: ['ferrum-lookup-max-interval'], help: 'maximum seconds between lookup attempts (IPA: 60)' }),
  O({ key: 'insecure', name: 'insecure', kind: 'bool', kernel: ['ipa-insecure'], help: 'do not verify TLS certificates of outbound calls' }),
  O({ key: 'agentToken', name: 'agent_token', kind: 'string', kernel: ['ipa-agent-token'], help: 'pre-shared agent token (virtual media)' }),
  O({ key: 'agentTokenRequired', name: 'agent_token_required', kind: 'bool', kernel: ['ipa-agent-token-required'], help: 'require the token from the start' }),
  O({ key: 'globalRequestId', name: 'global_request_id', kind: 'string', kernel: ['ipa-global-request-id'], help: 'sent as X-OpenStack-Request-ID' }),
  O({ key: 'ironicApiVersion', name: 'ironic_api_version', kind: 'version', kernel: ['ipa-ironic-api-version'], help: 'force this Ironic API version (no discovery)' }),
  O({ key: 'debug', name: 'debug', kind: 'bool', kernel: ['ipa-debug'], help: 'debug logging' }),
  O({ key: 'standalone', name: 'standalone', kind: 'bool', kernel: ['ipa-standalone'], help: 'no lookup or heartbeat; serve the command API at once' }),
  O({ key: 'enableAutoTls', name: 'enable_auto_tls', kind: 'bool', kernel: ['ipa-enable-auto-tls'], help: 'serve HTTPS with a self-signed certificate sent to Ironic' }),
  O({ key: 'listenTls', name: 'listen_tls', kind: 'bool', help: 'serve HTTPS with cert_file/key_file' }),
  O({ key: 'certFile', name: 'cert_file', kind: 'string', help: 'TLS certificate (PEM) for listen_tls' }),
  O({ key: 'keyFile', name: 'key_file', kind: 'string', help: 'TLS key (PEM) for listen_tls' }),
  O({ key: 'diskWaitAttempts', name: 'disk_wait_attempts', kind: 'int', kernel: ['ipa-disk-wait-attempts'], help: 'attempts to find a root disk' }),
  O({ key: 'diskWaitDelay', name: 'disk_wait_delay', kind: 'number', kernel: ['ipa-disk-wait-delay'], help: 'seconds between root disk attempts' }),
  O({ key: 'hardwareInitializationDelay', name: 'hardware_initialization_delay', kind: 'number', kernel: ['ipa-hardware-initialization-delay'], help: 'seconds to wait at start' }),
  O({ key: 'ntpServer', name: 'ntp_server', kind: 'string', kernel: ['ipa-ntp-server'], help: 'NTP server to sync with' }),
  O({ key: 'collectLldp', name: 'collect_lldp', kind: 'bool', kernel: ['ipa-collect-lldp'], help: 'collect LLDP into the inventory' }),
  O({ key: 'lldpTimeout', name: 'lldp_timeout', kind: 'number', kernel: ['ipa-lldp-timeout'], help: 'seconds to listen for LLDP' }),
  O({ key: 'ignoreBootloaderFailure', name: 'ignore_bootloader_failure', kind: 'bool', kernel: ['ipa-ignore-bootloader-failure'], help: 'treat bootloader install failures as success' }),
  O({ key: 'injectFilesPriority', name: 'inject_files_priority', kind: 'int', kernel: ['ipa-inject-files-priority'], help: 'priority of the inject_files deploy step' }),
  O({ key: 'guardSpecialFilesystems', name: 'guard_special_filesystems', kind: 'bool', kernel: ['ipa-guard-special-filesystems'], help: 'refuse to erase shared-storage filesystems' }),
  O({ key: 'imageDownloadConnectionTimeout', name: 'image_download_connection_timeout', kind: 'number', kernel: ['ipa-image-download-connection-timeout'], help: 'seconds without data before a download stalls' }),
  O({ key: 'imageDownloadRetries', name: 'image_download_connection_retries', kind: 'int', kernel: ['ipa-image-download-connection-retries'], help: 'download retries' }),
  O({ key: 'imageDownloadRetryInterval', name: 'image_download_connection_retry_interval', kind: 'number', kernel: ['ipa-image-download-connection-retry-interval'], help: 'seconds between download retries' }),
  O({ key: 'imageHttpClient', name: 'image_http_client', kind: 'string', choices: ['auto', 'undici'], kernel: ['ferrum-image-http-client'], help: 'auto: plain image answers (http/https, no proxy, Content-Length) are read into reused buffers, undici for the rest; undici: every image download through undici' }),
  O({ key: 'bootif', name: 'bootif', kind: 'string', kernel: ['BOOTIF'], help: 'PXE boot interface MAC (from the bootloader)' }),
  O({ key: 'bootMethod', name: 'boot_method', kind: 'string', kernel: ['boot_method'], help: 'vmedia when booted from virtual media' }),
  O({ key: 'heartbeatStatusMessage', name: 'heartbeat_status_message', kind: 'bool', kernel: ['ferrum-heartbeat-status-message'], help: 'heartbeats carry agent_status_message (API >= 1.72): the running command and its progress, or how the last one ended; 0: heartbeats exactly as IPA' }),
  O({ key: 'devices', name: 'devices', kind: 'list', kernel: ['ferrum-devices'], help: 'the only block devices the agent sees and may touch (e.g. /dev/loop3)' }),
  O({ key: 'interfaces', name: 'interfaces', kind: 'list', kernel: ['ferrum-interfaces'], help: 'NICs used for lookup instead of all physical ones' }),
  O({ key: 'power', name: 'power', kind: 'string', choices: ['real', 'none'], kernel: ['ferrum-power'], help: 'none: power_off/reboot are simulated and the agent starts over with lookup' }),
  O({ key: 'stateDir', name: 'state_dir', kind: 'string', kernel: ['ferrum-state-dir'], help: 'directory for runtime state (certificate, logs)' }),
  O({ key: 'sysRoot', name: 'sys_root', kind: 'string', kernel: ['ferrum-sys-root'], help: 'root of /sys, /proc and /dev reads (tests point it at fixtures)' }),
  O({ key: 'rescuePasswordFile', name: 'rescue_password_file', kind: 'string', help: 'where rescue.finalize_rescue writes the hashed password (IPA\'s path)' }),
];

export const DEFAULTS: Config = {
  apiUrls: [],
  inspectionCallbackUrl: null,
  inspectionCollectors: ['default', 'logs'],
  inspectionDhcpWaitTimeout: 60,
  listenHost: '::',
  listenPort: 9999,
  advertiseHost: null,
  advertisePort: 9999,
  advertiseProtocol: 'http',
  networkInterface: null,
  ipLookupAttempts: 6,
  ipLookupSleep: 10,
  lookupTimeout: 300,
  lookupInterval: 1,
  lookupMaxInterval: 60,
  insecure: false,
  agentToken: null,
  agentTokenRequired: false,
  globalRequestId: null,
  ironicApiVersion: null,
  debug: false,
  standalone: false,
  enableAutoTls: true,
  listenTls: false,
  certFile: null,
  keyFile: null,
  diskWaitAttempts: 10,
  diskWaitDelay: 3,
  hardwareInitializationDelay: 0,
  ntpServer: null,
  collectLldp: false,
  lldpTimeout: 30,
  ignoreBootloaderFailure: false,
  injectFilesPriority: 0,
  guardSpecialFilesystems: true,
  imageDownloadConnectionTimeout: 60,
  imageDownloadRetries: 9,
  imageDownloadRetryInterval: 10,
  imageHttpClient: 'auto',
  heartbeatStatusMessage: true,
  bootif: null,
  bootMethod: null,
  devices: null,
  interfaces: null,
  power: 'real',
  stateDir: '/run/ferrum',
  sysRoot: '/',
  rescuePasswordFile: '/etc/ipa-rescue-config/ipa-rescue-password',
};

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

const TRUE = new Set(['1', 'true', 'yes', 'on']);
const FALSE = new Set(['0', 'false', 'no', 'off']);

function convert(spec: OptionSpec, raw: string): unknown {
  const value = raw.trim();
  switch (spec.kind) {
    case 'string': {
      if (spec.choices && !spec.choices.includes(value)) throw new Error(`expected one of ${spec.choices.join(', ')}`);
      return value === '' ? null : value;
    }
    case 'int': {
      if (!/^-?\d+$/.test(value)) throw new Error('expected an integer');
      const n = Number(value);
      if (n < 0) throw new Error('expected a non-negative integer');
      return n;
    }
    case 'number': {
      // Decimal notation only (as oslo.config's float): Number() alone would take "0x10" or "0b1".
      const n = Number(value);
      if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(value) || !Number.isFinite(n)) throw new Error('expected a number');
      if (n < 0) throw new Error('expected a non-negative number');
      return n;
    }
    case 'port': {
      if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 65535) throw new Error('expected a port number 1-65535');
      return Number(value);
    }
    case 'bool': {
      const v = value.toLowerCase();
      if (TRUE.has(v)) return true;
      if (FALSE.has(v)) return false;
      throw new Error('expected a boolean (1/0, true/false, yes/no, on/off)');
    }
    case 'list':
      return value === '' ? null : value.split(',').map((s) => s.trim()).filter((s) => s !== '');
    case 'url':
      if (value === '') return null;
      checkUrl(value);
      return value;
    case 'url-list': {
      const urls = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
      urls.forEach(checkUrl);
      return urls.map((u) => u.replace(/\/+$/, ''));
    }
    case 'version':
      if (!/^\d+\.\d+$/.test(value)) throw new Error('expected a version like 1.68');
      return value;
    case 'host':
      if (value === '') return null;
      if (!isIP(value.replace(/^\[|\]$/g, '')) && !/^[A-Za-z0-9.-]+$/.test(value)) throw new Error('expected an IP address or host name');
      return value.replace(/^\[|\]$/g, '');
  }
}

function checkUrl(value: string): void {
  if (value === 'mdns') throw new Error('mDNS discovery is not supported by Ferrum; give an http(s) URL');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`"${value}" is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`"${value}" must be http:// or https://`);
}

export interface ConfigSources {
  /** Kernel command line text (from /proc/cmdline or --cmdline-file). */
  cmdline?: string;
  /** INI text of the config file. */
  configFile?: { path: string; text: string };
  env?: NodeJS.ProcessEnv;
  /** Flag values by option name (underscored), as strings. */
  flags?: Map<string, string>;
}

/** Builds the Config. Throws ConfigError listing every bad value with its source. */
export function buildConfig(sources: ConfigSources): Config {
  const config: Record<string, unknown> = { ...DEFAULTS };
  const problems: string[] = [];
  const apply = (spec: OptionSpec, raw: string, where: string) => {
    try {
      const value = convert(spec, raw);
      // An empty value means "unset" only for options that may be unset (null by default).
      if (value === null && DEFAULTS[spec.key] !== null) throw new Error('a value is required');
      config[spec.key] = value;
    } catch (err) {
      problems.push(`${where}: ${(err as Error).message}`);
    }
  };

  if (sources.cmdline !== undefined) {
    const params = parseKernelCmdline(sources.cmdline);
    for (const spec of OPTIONS) {
      for (const name of spec.kernel ?? []) {
        const raw = params.get(name);
        if (raw !== undefined) apply(spec, raw, `${name}=${raw} (kernel command line)`);
      }
    }
  }
  if (sources.configFile) {
    let ini: Map<string, Map<string, string>>;
    try {
      ini = parseIni(sources.configFile.text);
    } catch (err) {
      throw new ConfigError([`${sources.configFile.path}: ${(err as Error).message}`]);
    }
    const section = ini.get('DEFAULT') ?? new Map<string, string>();
    for (const [name, raw] of section) {
      const spec = OPTIONS.find((o) => o.name === name);
      if (!spec) {
        problems.push(`${sources.configFile.path}: unknown option "${name}"`);
        continue;
      }
      apply(spec, raw, `${name} = ${raw} (${sources.configFile.path})`);
    }
  }
  if (sources.env) {
    for (const spec of OPTIONS) {
      const envName = `FERRUM_${spec.name.toUpperCase()}`;
      const raw = sources.env[envName];
      if (raw !== undefined) apply(spec, raw, `${envName}=${raw} (environment)`);
    }
  }
  if (sources.flags) {
    for (const [name, raw] of sources.flags) {
      const spec = OPTIONS.find((o) => o.name === name);
      if (!spec) {
        problems.push(`--${name.replace(/_/g, '-')}: unknown option`);
        continue;
      }
      apply(spec, raw, `--${spec.name.replace(/_/g, '-')}=${raw} (command line)`);
    }
  }
  const result = config as unknown as Config;
  problems.push(...crossCheck(result));
  if (problems.length > 0) throw new ConfigError(problems);
  return result;
}

function crossCheck(c: Config): string[] {
  const problems: string[] = [];
  if (c.listenTls && (!c.certFile || !c.keyFile)) problems.push('listen_tls needs cert_file and key_file');
  if (c.devices) {
    for (const d of c.devices) {
      if (!/^\/dev\/[A-Za-z0-9._/-]+$/.test(d) || d.includes('..')) problems.push(`devices: "${d}" is not a /dev path`);
    }
  }
  if (c.lookupMaxInterval < c.lookupInterval) problems.push('lookup_max_interval must be >= lookup_interval');
  if (!c.standalone && c.apiUrls.length === 0 && !c.inspectionCallbackUrl) {
    problems.push('no Ironic API: give ipa-api-url (kernel), api_url (config file), --api-url, or run with --standalone');
  }
  return problems;
}

/** Reads the sources named by the process (flags --cmdline-file / --config-file) and builds the Config. */
export function loadConfig(flags: Map<string, string>, env: NodeJS.ProcessEnv): Config {
  const rest = new Map(flags);
  const cmdlinePath = rest.get('cmdline_file') ?? '/proc/cmdline';
  rest.delete('cmdline_file');
  // A file named by --config-file or FERRUM_CONFIG_FILE must exist; only the default path is optional.
  const explicitConfig = rest.get('config_file') ?? env['FERRUM_CONFIG_FILE'];
  rest.delete('config_file');
  const configPath = explicitConfig ?? '/etc/ferrum/agent.conf';

  const sources: ConfigSources = { env, flags: rest };
  try {
    sources.cmdline = readFileSync(cmdlinePath, 'utf8');
  } catch (err) {
    if (flags.has('cmdline_file')) throw new ConfigError([`--cmdline-file ${cmdlinePath}: ${(err as Error).message}`]);
  }
  if (explicitConfig !== undefined || existsSync(configPath)) {
    try {
      sources.configFile = { path: configPath, text: readFileSync(configPath, 'utf8') };
    } catch (err) {
      throw new ConfigError([`config file ${configPath}: ${(err as Error).message}`]);
    }
  }
  return buildConfig(sources);
}
