import { describe, expect, it } from 'vitest';
import { UsageError, parseFlags, usage } from '../../src/agent/cli.js';
import { OPTIONS } from '../../src/agent/config.js';

const flags = (...argv: string[]) => Object.fromEntries(parseFlags(argv));

describe('parseFlags', () => {
  it('reads "--name value" and "--name=value", dashes becoming underscores', () => {
    expect(flags('--api-url', 'http://10.0.0.1:6385', '--listen-port=8999', '--lookup-timeout', '0')).toEqual({
      api_url: 'http://10.0.0.1:6385',
      listen_port: '8999',
      lookup_timeout: '0',
    });
  });

  it('keeps everything after the first "=" and allows empty values', () => {
    expect(flags('--global-request-id=req=1=2', '--agent-token=')).toEqual({ global_request_id: 'req=1=2', agent_token: '' });
  });

  it('takes a value that starts with dashes when one is required', () => {
    expect(flags('--agent-token', '--secret')).toEqual({ agent_token: '--secret' });
  });

  it('reads booleans as --flag, --flag=value and --no-flag', () => {
    expect(flags('--standalone', '--insecure=false', '--no-enable-auto-tls', '--debug=1')).toEqual({
      standalone: 'true',
      insecure: 'false',
      enable_auto_tls: 'false',
      debug: '1',
    });
  });

  it('lets the last occurrence win', () => {
    expect(flags('--debug', '--no-debug')).toEqual({ debug: 'false' });
    expect(flags('--listen-port', '1', '--listen-port', '2')).toEqual({ listen_port: '2' });
  });

  it('accepts --cmdline-file and --config-file', () => {
    expect(flags('--cmdline-file', '/tmp/cmdline', '--config-file=/tmp/a.conf')).toEqual({
      cmdline_file: '/tmp/cmdline',
      config_file: '/tmp/a.conf',
    });
  });

  it('knows every option of the config', () => {
    for (const o of OPTIONS) {
      const name = `--${o.name.replace(/_/g, '-')}`;
      expect(parseFlags(o.kind === 'bool' ? [name] : [name, 'x']).has(o.name)).toBe(true);
    }
  });

  it('rejects unknown options, also as --no-<non-boolean>', () => {
    expect(() => parseFlags(['--bogus'])).toThrow(new UsageError('unknown option --bogus'));
    expect(() => parseFlags(['--bogus=1'])).toThrow('unknown option --bogus');
    expect(() => parseFlags(['--no-api-url'])).toThrow('unknown option --no-api-url');
    expect(() => parseFlags(['--api_url', 'x'])).not.toThrow(); // underscores are the same option
  });

  it('rejects a missing value and positional arguments', () => {
    expect(() => parseFlags(['--standalone', '--api-url'])).toThrow(new UsageError('--api-url needs a value'));
    expect(() => parseFlags(['--config-file'])).toThrow('--config-file needs a value');
    expect(() => parseFlags(['http://10.0.0.1'])).toThrow('unexpected argument "http://10.0.0.1"');
    expect(() => parseFlags(['--debug', 'false'])).toThrow('unexpected argument "false"');
    expect(() => parseFlags(['-d'])).toThrow(UsageError);
  });

  it('returns an empty map for no arguments', () => {
    expect(parseFlags([]).size).toBe(0);
  });
});

describe('usage', () => {
  it('lists every option with its kernel parameter and the FERRUM_ variables', () => {
    const text = usage();
    expect(text).toContain('--cmdline-file PATH');
    expect(text).toContain('--config-file PATH');
    for (const o of OPTIONS) {
      const line = text.split('\n').find((l) => l.trimStart().startsWith(`--${o.name.replace(/_/g, '-')} `) || l.trim() === `--${o.name.replace(/_/g, '-')}`);
      expect(line, o.name).toBeDefined();
      if (o.kernel) expect(line).toContain(`[${o.kernel[0]}=]`);
    }
    expect(text).toContain('FERRUM_API_URL');
  });
});
