// Discovery documents of the agent API (GET /, GET /v1/) and GET /v1/status.
import Type, { type Static } from 'typebox';

export const AGENT_API_NAME = 'OpenStack Ironic Python Agent API';
export const AGENT_API_DESCRIPTION = 'Ironic Python Agent is a provisioning agent for OpenStack Ironic';
export const AGENT_DOCS_URL = 'https://docs.openstack.org/ironic-python-agent';
export const AGENT_MEDIA_TYPE = 'application/vnd.openstack.ironic-python-agent.v1+json';

export const Link = Type.Object(
  { href: Type.String(), rel: Type.String(), type: Type.Optional(Type.String()) },
  { $id: 'Link', additionalProperties: false },
);
export type Link = Static<typeof Link>;

export const ApiVersion = Type.Object(
  { id: Type.Literal('v1'), links: Type.Array(Link) },
  { $id: 'ApiVersion', additionalProperties: true },
);
export type ApiVersion = Static<typeof ApiVersion>;

export const RootDocument = Type.Object(
  {
    name: Type.String(),
    description: Type.String(),
    versions: Type.Array(ApiVersion),
    default_version: ApiVersion,
  },
  { $id: 'RootDocument', additionalProperties: false },
);
export type RootDocument = Static<typeof RootDocument>;

export const V1Document = Type.Object(
  {
    id: Type.Literal('v1'),
    links: Type.Array(Link),
    commands: Type.Array(Link),
    status: Type.Array(Link),
    media_types: Type.Array(Type.Object({ base: Type.String(), type: Type.String() })),
  },
  { $id: 'V1Document', additionalProperties: false },
);
export type V1Document = Static<typeof V1Document>;

/** GET /v1/status. IPA sends `started_at` (epoch seconds) and `version`; Ferrum adds its own version, phase and node. */
export const AgentStatus = Type.Object(
  {
    started_at: Type.Number(),
    version: Type.String(),
    ferrum_version: Type.Optional(Type.String()),
    /** Ferrum: what the agent is doing (starting, looking-up, heartbeating, ...). */
    phase: Type.Optional(Type.String()),
    /** Ferrum: the node lookup found, null before lookup (and after a simulated reboot). */
    node_uuid: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  },
  { $id: 'AgentStatus', additionalProperties: true },
);
export type AgentStatus = Static<typeof AgentStatus>;

function link(root: string, rel: string, resource: string, bookmark: boolean): Link {
  if (rel === 'describedby') return { href: `${AGENT_DOCS_URL}/`, rel, type: 'text/html' };
  const base = bookmark || rel === 'bookmark' ? `${root}/${resource}` : `${root}/v1/${resource}`;
  return { href: base, rel };
}

export function apiVersion(root: string): ApiVersion {
  return { id: 'v1', links: [link(root, 'self', 'v1', true), link(root, 'describedby', '', true)] };
}

export function rootDocument(root: string): RootDocument {
  return {
    name: AGENT_API_NAME,
    description: AGENT_API_DESCRIPTION,
    versions: [apiVersion(root)],
    default_version: apiVersion(root),
  };
}

export function v1Document(root: string): V1Document {
  return {
    ...apiVersion(root),
    commands: [link(root, 'self', 'commands', false), link(root, 'bookmark', 'commands', false)],
    status: [link(root, 'self', 'status', false), link(root, 'bookmark', 'status', false)],
    media_types: [{ base: 'application/json', type: AGENT_MEDIA_TYPE }],
  };
}
