// Writes every wire schema as a plain JSON Schema file, for clients not written in TypeScript.
// Usage: node dist/protocol/export-json-schemas.js OUTDIR
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as protocol from './index.js';
import { AGENT_COMMANDS } from './agent-commands.js';

export function collectSchemas(): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const value of Object.values(protocol) as unknown[]) {
    const id = value && typeof value === 'object' ? (value as { $id?: unknown }).$id : undefined;
    if (typeof id === 'string') out.set(id, value);
  }
  for (const [name, spec] of Object.entries(AGENT_COMMANDS)) {
    out.set(`command.${name}.params`, spec.params);
    out.set(`command.${name}.result`, spec.result);
  }
  return out;
}

export function writeSchemas(dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  for (const [id, schema] of collectSchemas()) {
    const file = join(dir, `${id}.schema.json`);
    const doc = { $schema: 'https://json-schema.org/draft/2020-12/schema', ...(schema as object), $id: id };
    writeFileSync(file, JSON.stringify(doc, null, 2) + '\n');
    written.push(file);
  }
  return written;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = process.argv[2] ?? 'schemas';
  const files = writeSchemas(dir);
  console.log(`wrote ${files.length} JSON Schema files to ${dir}/`);
}
