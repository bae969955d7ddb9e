import { describe, expect, it } from 'vitest';
import { parseIni, parseKernelCmdline } from '../../src/agent/cmdline.js';

describe('parseKernelCmdline (IPA rules)', () => {
  it('splits on any whitespace, including the trailing newline of /proc/cmdline', () => {
    const p = parseKernelCmdline('  BOOT_IMAGE=/vmlinuz\tipa-api-url=http://10.0.0.1:6385 \n ipa-debug=1\n');
    expect([...p.entries()]).toEqual([
      ['BOOT_IMAGE', '/vmlinuz'],
      ['ipa-api-url', 'http://10.0.0.1:6385'],
      ['ipa-debug', '1'],
    ]);
  });

  it('splits key and value at the first "=" only', () => {
    const p = parseKernelCmdline('ipa-global-request-id=req=abc==  root=UUID=1234-ABCD');
    expect(p.get('ipa-global-request-id')).toBe('req=abc==');
    expect(p.get('root')).toBe('UUID=1234-ABCD');
  });

  it('ignores tokens without "=" and tokens starting with "="', () => {
    const p = parseKernelCmdline('text nofb nomodeset =orphan vga=normal quiet');
    expect([...p.keys()]).toEqual(['vga']);
  });

  it('keeps empty values ("key=")', () => {
    expect(parseKernelCmdline('ipa-agent-token=').get('ipa-agent-token')).toBe('');
  });

  it('lets a later duplicate win, as the kernel does', () => {
    const p = parseKernelCmdline('ipa-api-url=http://a:6385 BOOTIF=01-aa-bb-cc-dd-ee-ff ipa-api-url=http://b:6385');
    expect(p.get('ipa-api-url')).toBe('http://b:6385');
    expect(p.size).toBe(2);
  });

  it('does not interpret quotes', () => {
    const p = parseKernelCmdline('a="x y" b=1');
    expect(p.get('a')).toBe('"x');
    expect(p.get('b')).toBe('1');
    expect(p.has('y"')).toBe(false);
  });

  it('returns an empty map for empty input', () => {
    expect(parseKernelCmdline('').size).toBe(0);
    expect(parseKernelCmdline('   \n').size).toBe(0);
  });
});

describe('parseIni', () => {
  it('reads sections, "key = value", "key: value" and skips # and ; comments', () => {
    const ini = parseIni(
      ['# comment', '; other comment', '', 'orphan = 1', '[DEFAULT]', 'api_url = http://x:6385  ', 'debug: true', '[disk_utils]', 'dd_block_size=4M'].join('\r\n'),
    );
    expect(Object.fromEntries(ini.get('DEFAULT')!)).toEqual({ orphan: '1', api_url: 'http://x:6385', debug: 'true' });
    expect(Object.fromEntries(ini.get('disk_utils')!)).toEqual({ dd_block_size: '4M' });
  });

  it('splits at the first separator, so URLs keep their colons', () => {
    const ini = parseIni('[DEFAULT]\napi_url = http://[fd00::1]:6385/\n');
    expect(ini.get('DEFAULT')!.get('api_url')).toBe('http://[fd00::1]:6385/');
  });

  it('merges a repeated section and lets later keys win', () => {
    const ini = parseIni('[DEFAULT]\na = 1\n[x]\nb = 2\n[DEFAULT]\na = 3\n');
    expect(ini.get('DEFAULT')!.get('a')).toBe('3');
  });

  it('reports the line number of a line that is not key = value', () => {
    expect(() => parseIni('[DEFAULT]\napi_url = http://x\nthis is not valid\n')).toThrow(
      'line 3: expected "key = value", got "this is not valid"',
    );
    expect(() => parseIni('= value')).toThrow(/line 1: expected "key = value"/);
  });
});
