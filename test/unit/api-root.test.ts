import { describe, expect, it } from 'vitest';
import { AGENT_MEDIA_TYPE, RootDocument, V1Document, apiVersion, rootDocument, v1Document } from '../../src/protocol/api-root.js';
import { schemaErrors } from '../../src/protocol/validate.js';

const ROOT = 'http://10.0.0.15:9999';

// Exactly what IPA 9.4.3 answers (protocol reference §5).
const V1 = {
  id: 'v1',
  links: [
    { href: 'http://10.0.0.15:9999/v1', rel: 'self' },
    { href: 'https://docs.openstack.org/ironic-python-agent/', rel: 'describedby', type: 'text/html' },
  ],
};

describe('GET / document', () => {
  it('is IPA\'s root document', () => {
    expect(rootDocument(ROOT)).toStrictEqual({
      name: 'OpenStack Ironic Python Agent API',
      description: 'Ironic Python Agent is a provisioning agent for OpenStack Ironic',
      versions: [V1],
      default_version: V1,
    });
    expect(schemaErrors(RootDocument, rootDocument(ROOT))).toEqual([]);
  });

  it('builds links from the request root (https, IPv6)', () => {
    expect(apiVersion('https://[fd00::15]:9999').links[0]).toStrictEqual({ href: 'https://[fd00::15]:9999/v1', rel: 'self' });
  });
});

describe('GET /v1/ document', () => {
  it('is V1 plus commands, status and media_types', () => {
    expect(v1Document(ROOT)).toStrictEqual({
      ...V1,
      commands: [
        { href: 'http://10.0.0.15:9999/v1/commands', rel: 'self' },
        { href: 'http://10.0.0.15:9999/commands', rel: 'bookmark' },
      ],
      status: [
        { href: 'http://10.0.0.15:9999/v1/status', rel: 'self' },
        { href: 'http://10.0.0.15:9999/status', rel: 'bookmark' },
      ],
      media_types: [{ base: 'application/json', type: 'application/vnd.openstack.ironic-python-agent.v1+json' }],
    });
    expect(AGENT_MEDIA_TYPE).toBe('application/vnd.openstack.ironic-python-agent.v1+json');
    expect(schemaErrors(V1Document, v1Document(ROOT))).toEqual([]);
  });

  it('the schemas reject a document with extra keys', () => {
    expect(schemaErrors(V1Document, { ...v1Document(ROOT), extra: 1 })).not.toEqual([]);
    expect(schemaErrors(RootDocument, { ...rootDocument(ROOT), versions: [{ id: 'v2', links: [] }] })).not.toEqual([]);
  });
});
