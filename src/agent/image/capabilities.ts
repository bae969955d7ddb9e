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

/** 'uefi' or 'bios' in any case; null for anything else. */
export function asBootMode(v: unknown): 'uefi' | 'bios' | null {
  const t = typeof v === 'string' ? v.toLowerCase() : null;
  return t === 'uefi' || t === 'bios' ? t : null;
}

/**
 * The boot mode a node asks for (IPA utils.get_node_boot_mode, less secure boot): instance_info
 * deploy_boot_mode, then capabilities boot_mode, then driver_internal_info deploy_boot_mode.
 */
export function bootModeOf(node: Record<string, unknown> | null | undefined): 'uefi' | 'bios' | null {
  return (
    asBootMode(asObject(node?.['instance_info'])['deploy_boot_mode']) ??
    asBootMode(parseCapabilities(asObject(node?.['properties'])['capabilities'])['boot_mode']) ??
    asBootMode(asObject(node?.['driver_internal_info'])['deploy_boot_mode'])
  );
}
