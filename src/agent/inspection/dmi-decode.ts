// dmi-decode collector: `dmidecode -t bios -t processor -t memory` parsed into IPA's
// {bios, cpu, memory: {..., devices}} where keys are dmidecode's own labels.
import type { Host } from '../host/host.js';

type Section = Record<string, string | string[]>;

/** Splits dmidecode text into its structures: [{title, fields}]. */
export function parseDmidecode(text: string): Array<{ title: string; fields: Section }> {
  const out: Array<{ title: string; fields: Section }> = [];
  let current: { title: string; fields: Section } | null = null;
  let listKey: string | null = null;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith('Handle ')) {
      const title = (lines[i + 1] ?? '').trim();
      current = { title, fields: {} };
      out.push(current);
      listKey = null;
      i++;
      continue;
    }
    if (!current) continue;
    if (line.startsWith('\t\t')) {
      if (listKey) (current.fields[listKey] as string[]).push(line.trim());
      continue;
    }
    if (line.startsWith('\t')) {
      const idx = line.indexOf(':');
      if (idx < 0) continue;
      const key = line.slice(1, idx).trim();
      const value = line.slice(idx + 1).trim();
      if (value === '') {
        current.fields[key] = [];
        listKey = key;
      } else {
        current.fields[key] = value;
        listKey = null;
      }
    }
  }
  return out;
}

export interface DmiData {
  bios: Section;
  cpu: Section[];
  memory: Record<string, string | string[] | Section[]> & { devices: Section[] };
}

export function dmiFromText(text: string): DmiData {
  const structs = parseDmidecode(text);
  const bios = structs.find((s) => s.title === 'BIOS Information')?.fields ?? {};
  const cpu = structs.filter((s) => s.title === 'Processor Information').map((s) => s.fields);
  const array = structs.find((s) => s.title === 'Physical Memory Array')?.fields ?? {};
  const devices = structs.filter((s) => s.title === 'Memory Device').map((s) => s.fields);
  return { bios, cpu, memory: { ...array, devices } };
}

export async function collectDmi(host: Host): Promise<DmiData> {
  const res = await host.run('dmidecode', ['-t', 'bios', '-t', 'processor', '-t', 'memory'], { timeoutMs: 20_000 });
  return dmiFromText(res.stdout);
}
