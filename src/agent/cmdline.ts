// Kernel command line parsing, as IPA does it: whitespace-separated tokens, key=value split at the
// first '=', tokens without '=' ignored, no quoting. Later duplicates win, as in the kernel.

export function parseKernelCmdline(text: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const token of text.split(/\s+/)) {
    const eq = token.indexOf('=');
    if (eq <= 0) continue;
    params.set(token.slice(0, eq), token.slice(eq + 1));
  }
  return params;
}

/** Minimal INI reader for IPA-style config files: `[section]` headers, `key = value`, `#`/`;` comments. */
export function parseIni(text: string): Map<string, Map<string, string>> {
  const sections = new Map<string, Map<string, string>>();
  let current = new Map<string, string>();
  sections.set('DEFAULT', current);
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const header = /^\[([^\]]+)\]$/.exec(line);
    if (header) {
      const name = header[1]!.trim();
      current = sections.get(name) ?? new Map<string, string>();
      sections.set(name, current);
      return;
    }
    const sep = line.search(/[=:]/);
    if (sep <= 0) throw new Error(`line ${index + 1}: expected "key = value", got "${line}"`);
    current.set(line.slice(0, sep).trim(), line.slice(sep + 1).trim());
  });
  return sections;
}
