// Every program the agent runs must be in the ramdisk: image-build/build.sh checks its TOOLS list
// inside the built image, and this test keeps that list complete against the agent's source (a
// missing sfdisk once failed a deploy only in the end-to-end VM test).
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const SRC = join(import.meta.dirname, '../../src/agent');
// Optional in IPA too (used when present), or run inside the deployed image's chroot.
const OPTIONAL = new Set(['biosdevname', 'ntpdate', 'multipath', 'grub-install', 'grub2-install', 'grub-mkconfig', 'grub2-mkconfig', 'dracut']);
// coreutils and friends: part of every Debian system ("essential").
const ESSENTIAL = new Set(['cp', 'ln', 'mkdir', 'rm', 'rmdir', 'od', 'sync', 'true', 'sh', 'df', 'cat']);

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function commandsInSource(): Set<string> {
  const found = new Set<string>();
  const patterns = [
    /\b(?:run|hasCommand|runTool)\(\s*(?:[\w.]+,\s*)?'([a-z0-9][\w.+-]*)'/g, // host.run('x', …), runTool(host, 'x', …)
    /\bspawn\(\s*'([a-z0-9][\w.+-]*)'/g,
    /\bthroughProcess\([^,]+,\s*'([a-z0-9][\w.+-]*)'/g,
    /\{\s*file:\s*'[^']+',\s*cmd:\s*'([a-z0-9][\w.+-]*)'/g, // system-logs sources
    /\b(\w+) = '(?:\1)'/g, // a program name as a parameter default: tcpdump = 'tcpdump'
    /return \['([a-z][\w.+-]*)', /g, // [cmd, args] built by a helper (mkfs/mkswap)
  ];
  for (const file of sources(SRC)) {
    const text = readFileSync(file, 'utf8');
    for (const re of patterns) for (const m of text.matchAll(re)) found.add(m[1]!);
  }
  return found;
}

function toolsInBuild(): Set<string> {
  const script = readFileSync(join(import.meta.dirname, '../../image-build/build.sh'), 'utf8');
  const m = /^TOOLS="([^"]+)"/m.exec(script);
  if (!m) throw new Error('image-build/build.sh has no TOOLS="…" list');
  return new Set(m[1]!.split(/\s+/).filter(Boolean));
}

describe('the ramdisk carries every tool the agent runs', () => {
  it('finds the commands in the source (the scan itself works)', () => {
    const cmds = commandsInSource();
    for (const known of ['lsblk', 'wipefs', 'sfdisk', 'partprobe', 'journalctl', 'tcpdump', 'xz', 'zstd', 'mkfs', 'mkswap']) expect(cmds).toContain(known);
  });

  it('lists each of them in image-build/build.sh TOOLS', () => {
    const tools = toolsInBuild();
    const missing = [...commandsInSource()].filter((c) => !tools.has(c) && !OPTIONAL.has(c) && !ESSENTIAL.has(c)).sort();
    expect(missing).toEqual([]);
  });
});
