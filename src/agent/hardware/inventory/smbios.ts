// A reader of the raw SMBIOS table the kernel exposes (/sys/firmware/dmi/tables/DMI): the same
// data dmidecode prints, without spawning it. Only the structures the inventory needs.

export interface SmbiosStructure {
  type: number;
  handle: number;
  /** The formatted area, header included. */
  data: Buffer;
  strings: string[];
}

export function parseSmbios(table: Buffer): SmbiosStructure[] {
  const out: SmbiosStructure[] = [];
  let off = 0;
  while (off + 4 <= table.length) {
    const type = table[off]!;
    const length = table[off + 1]!;
    if (length < 4 || off + length > table.length) break;
    const handle = table.readUInt16LE(off + 2);
    const data = table.subarray(off, off + length);
    // Strings follow the formatted area and end with a double NUL.
    let p = off + length;
    const strings: string[] = [];
    if (table[p] === 0 && table[p + 1] === 0) {
      p += 2;
    } else {
      while (p < table.length) {
        const end = table.indexOf(0, p);
        if (end < 0) break;
        strings.push(table.subarray(p, end).toString('latin1').trim());
        p = end + 1;
        if (table[p] === 0) {
          p++;
          break;
        }
      }
    }
    out.push({ type, handle, data, strings });
    off = p;
    if (type === 127) break; // end-of-table
  }
  return out;
}

/** The string a formatted-area byte refers to (1-based index), or null. */
export function smbiosString(s: SmbiosStructure, offset: number): string | null {
  if (offset >= s.data.length) return null;
  const index = s.data[offset]!;
  if (index === 0) return null;
  return s.strings[index - 1] ?? null;
}

/** Size of a type 17 memory device in MiB, 0 when the slot is empty, null when unknown. */
export function memoryDeviceMiB(s: SmbiosStructure): number | null {
  if (s.type !== 17 || s.data.length < 0x0e) return null;
  const size = s.data.readUInt16LE(0x0c);
  if (size === 0) return 0;
  if (size === 0xffff) return null;
  if (size === 0x7fff) return s.data.length >= 0x20 ? s.data.readUInt32LE(0x1c) & 0x7fffffff : null;
  return size & 0x8000 ? (size & 0x7fff) / 1024 : size;
}
