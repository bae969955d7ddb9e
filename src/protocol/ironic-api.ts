// Ironic's ramdisk endpoints as the agent uses them: version discovery, lookup, heartbeat.
import Type, { type Static } from 'typebox';

/** Lowest API version with the ramdisk endpoints; below it lookup/heartbeat answer 404. */
export const MIN_RAMDISK_API_VERSION = '1.22';
/** Version IPA assumes when discovery fails (we never fall back silently; see ironic client). */
export const IPA_FALLBACK_API_VERSION = '1.31';
/** Highest version the agent asks for on lookup (agent token). */
export const LOOKUP_API_VERSION_CAP = '1.62';
/** Highest version the agent asks for on heartbeat (agent_verify_ca). */
export const HEARTBEAT_API_VERSION_CAP = '1.68';
/** Feature thresholds. */
export const API_VERSION_AGENT_VERSION = '1.36';
export const API_VERSION_AGENT_TOKEN = '1.62';
export const API_VERSION_AGENT_VERIFY_CA = '1.68';
/** agent_status / agent_status_message in heartbeats (IPA never sends them). */
export const API_VERSION_HEARTBEAT_STATUS = '1.72';

export const API_VERSION_HEADER = 'X-OpenStack-Ironic-API-Version';
export const REQUEST_ID_HEADER = 'X-OpenStack-Request-ID';

/** GET {ironic}/ — only what the agent reads. */
export const IronicRootDocument = Type.Object(
  {
    default_version: Type.Object(
      {
        version: Type.String({ pattern: '^[0-9]+\\.[0-9]+$' }),
        min_version: Type.Optional(Type.String()),
        id: Type.Optional(Type.String()),
      },
      { additionalProperties: true },
    ),
  },
  { $id: 'IronicRootDocument', additionalProperties: true },
);
export type IronicRootDocument = Static<typeof IronicRootDocument>;

/** GET /v1/lookup query. */
export const LookupQuery = Type.Object(
  {
    addresses: Type.String({ description: 'comma-separated lowercase MAC addresses' }),
    node_uuid: Type.Optional(Type.String({ format: 'uuid' })),
  },
  { $id: 'LookupQuery', additionalProperties: false },
);
export type LookupQuery = Static<typeof LookupQuery>;

export const LookupNode = Type.Object(
  {
    uuid: Type.String({ minLength: 1 }),
    properties: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    instance_info: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    driver_internal_info: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    links: Type.Optional(Type.Array(Type.Unknown())),
  },
  { $id: 'LookupNode', additionalProperties: true },
);
export type LookupNode = Static<typeof LookupNode>;

export const LookupConfig = Type.Object(
  {
    heartbeat_timeout: Type.Number({ exclusiveMinimum: 0 }),
    agent_token: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    agent_token_required: Type.Optional(Type.Boolean()),
    metrics: Type.Optional(Type.Unknown()),
    metrics_statsd: Type.Optional(Type.Unknown()),
    disable_deep_image_inspection: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    permitted_image_formats: Type.Optional(Type.Union([Type.Array(Type.String()), Type.Null()])),
    enable_bios_bootloader_install: Type.Optional(Type.Boolean()),
  },
  { $id: 'LookupConfig', additionalProperties: true },
);
export type LookupConfig = Static<typeof LookupConfig>;

/** 200 answer of GET /v1/lookup. Legacy conductors put heartbeat_timeout at the top level. */
export const LookupResponse = Type.Object(
  {
    node: LookupNode,
    config: Type.Optional(LookupConfig),
    heartbeat_timeout: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
  },
  { $id: 'LookupResponse', additionalProperties: true },
);
export type LookupResponse = Static<typeof LookupResponse>;

/** POST /v1/heartbeat/{node} body. */
export const HeartbeatBody = Type.Object(
  {
    callback_url: Type.String({ minLength: 1 }),
    agent_token: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    agent_version: Type.Optional(Type.String()),
    agent_verify_ca: Type.Optional(Type.String()),
    agent_status: Type.Optional(Type.String()),
    agent_status_message: Type.Optional(Type.String()),
  },
  { $id: 'HeartbeatBody', additionalProperties: false },
);
export type HeartbeatBody = Static<typeof HeartbeatBody>;

/** Compare two "X.Y" API versions. */
export function compareApiVersions(a: string, b: string): number {
  const [amaj = 0, amin = 0] = a.split('.').map(Number);
  const [bmaj = 0, bmin = 0] = b.split('.').map(Number);
  return amaj !== bmaj ? amaj - bmaj : amin - bmin;
}

export function minApiVersion(a: string, b: string): string {
  return compareApiVersions(a, b) <= 0 ? a : b;
}

/** The human-readable text of an Ironic error body (its error_message is itself JSON). */
export function ironicFaultString(body: string): string {
  try {
    const outer = JSON.parse(body) as { error_message?: unknown };
    if (typeof outer.error_message === 'string') {
      try {
        const inner = JSON.parse(outer.error_message) as { faultstring?: unknown };
        if (typeof inner.faultstring === 'string') return inner.faultstring;
      } catch {
        return outer.error_message;
      }
      return outer.error_message;
    }
  } catch {
    // not JSON: fall through
  }
  return body.slice(0, 500);
}
