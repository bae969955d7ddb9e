// The ferrum-agent command line: flag parsing, usage text and the process around the Agent.
import { Agent } from './agent.js';
import { ConfigError, OPTIONS, loadConfig } from './config.js';
import { createLogging } from './log.js';
import { FERRUM_VERSION, IPA_COMPAT_VERSION } from './version.js';

const BOOL_OPTIONS = new Set(OPTIONS.filter((o) => o.kind === 'bool').map((o) => o.name));
const EXTRA = new Set(['cmdline_file', 'config_file']);

export class UsageError extends Error {}

/** `--name value`, `--name=value`; booleans as `--flag`, `--flag=false` or `--no-flag`. */
export function parseFlags(argv: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    let name = (eq >= 0 ? arg.slice(2, eq) : arg.slice(2)).replace(/-/g, '_');
    let value: string | undefined = eq >= 0 ? arg.slice(eq + 1) : undefined;
    if (value === undefined && name.startsWith('no_') && BOOL_OPTIONS.has(name.slice(3))) {
      name = name.slice(3);
      value = 'false';
    }
    if (!BOOL_OPTIONS.has(name) && !EXTRA.has(name) && !OPTIONS.some((o) => o.name === name)) {
      throw new UsageError(`unknown option --${name.replace(/_/g, '-')}`);
    }
    if (value === undefined) {
      if (BOOL_OPTIONS.has(name)) value = 'true';
      else {
        value = argv[++i];
        if (value === undefined) throw new UsageError(`--${name.replace(/_/g, '-')} needs a value`);
      }
    }
    flags.set(name, value);
  }
  return flags;
}

export function usage(): string {
  const lines = [
    `ferrum-agent ${FERRUM_VERSION} (speaks IPA ${IPA_COMPAT_VERSION})`,
    '',
    'usage: ferrum-agent [--option value]...',
    '',
    '  --cmdline-file PATH   read kernel parameters from PATH instead of /proc/cmdline',
    '  --config-file PATH    IPA-style config file ([DEFAULT] section; default /etc/ferrum/agent.conf)',
  ];
  for (const o of OPTIONS) {
    const flag = `--${o.name.replace(/_/g, '-')}${o.kind === 'bool' ? '' : ' VALUE'}`;
    const kernel = o.kernel ? ` [${o.kernel[0]}=]` : '';
    lines.push(`  ${flag.padEnd(44)} ${o.help}${kernel}`);
  }
  lines.push('', 'Every option is also read from FERRUM_<OPTION> (e.g. FERRUM_API_URL).');
  return lines.join('\n');
}

/** Runs the agent; resolves with an exit code, or null while it keeps serving without a conductor. */
export async function runAgentCli(argv: string[]): Promise<number | null> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(usage());
    return 0;
  }
  if (argv.includes('--version')) {
    console.log(FERRUM_VERSION);
    return 0;
  }
  let config;
  try {
    config = loadConfig(parseFlags(argv), process.env);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof UsageError) {
      console.error(`ferrum-agent: ${err.message}`);
      return 2;
    }
    throw err;
  }
  const logging = createLogging({ debug: config.debug });
  const agent = new Agent(config, logging);
  const shutdown = (signal: string) => {
    logging.logger.info({ signal }, 'stopping');
    void agent.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  // A bug in one command must not take the agent down with it.
  process.on('uncaughtException', (err) => logging.logger.fatal({ err }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => logging.logger.error({ err }, 'unhandled rejection'));
  try {
    await agent.start();
    await agent.done;
  } catch (err) {
    logging.logger.fatal({ err: (err as Error).message }, 'agent failed');
    // Also as a plain line, like configuration errors: whoever started the agent reads this one
    // (e.g. a --devices entry that does not exist), not a JSON log line.
    console.error(`ferrum-agent: ${(err as Error).message}`);
    await agent.stop().catch(() => undefined);
    return 1;
  }
  // Standalone or API-only: the listening server keeps the process alive.
  return agent.config.standalone || agent.config.apiUrls.length === 0 ? null : 0;
}
