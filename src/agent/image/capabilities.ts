// Ironic node fields as the agent reads them (capabilities come as a dict, a JSON string or
// "k1:v1,k2:v2"; the boot mode from several places). A module of its own so that the RAID clean
// steps, loaded at start-up, read them without pulling in the partition-image code, which is
// loaded only for partition images.

/** `v` when it is a plain object, else {}. */
export function asObject(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

/** Ironic capabilities: a dict, a JSON string or "k1:v1,k2:v2". */
export function parseCapabilities(v: unknown): Record<string, unknown> {
  if (typeof v === 'string') {
    try {
      const parsed: unknown = JSON.parse(v);
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
    } catch {
      // key:value pairs
    }
    const caps: Record<string, unknown> = {};
    for (const pair of v.split(',')) {
      const i = pair.indexOf(':');
      if (i > 0) caps[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
    }
    return caps;
  }
  return asObject(v);
}

/** The boot mode a node asks for: instance_info deploy_boot_mode, capabilities boot_mode, driver_internal_info. */
export function bootModeOf(node: Record<string, unknown> | null | undefined): 'uefi' | 'bios' | null {
  const ii = node?.['instance_info'] as Record<string, unknown> | undefined;
  const fromInstance = ii?.['deploy_boot_mode'];
  if (fromInstance === 'uefi' || fromInstance === 'bios') return fromInstance;
  const caps = (node?.['properties'] as Record<string, unknown> | undefined)?.['capabilities'];
  const m = typeof caps === 'string' ? /(?:^|,)boot_mode:(uefi|bios)/.exec(caps) : null;
  if (m) return m[1] as 'uefi' | 'bios';
  const dii = (node?.['driver_internal_info'] as Record<string, unknown> | undefined)?.['deploy_boot_mode'];
  return dii === 'uefi' || dii === 'bios' ? dii : null;
}
