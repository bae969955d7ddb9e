import { describe, expect, it } from 'vitest';
import { AgentState, tokensEqual } from '../../src/agent/state.js';

const LOOKUP_TOKEN = 'p3yx2Xb0sIgN9wq4H6vLrTqYk1eZcJmA8uD5fWoR7sE';
const KERNEL_TOKEN = 'kErNeLtOkEnFrOmViRtUaLmEdIa0123456789abcdef';
const NODE = { uuid: '9f5c1e2a-3b4d-4c5e-8f60-718293a4b5c6' };

describe('tokensEqual', () => {
  it('compares exactly, including different lengths, without throwing', () => {
    expect(tokensEqual(LOOKUP_TOKEN, LOOKUP_TOKEN)).toBe(true);
    expect(tokensEqual(LOOKUP_TOKEN, `${LOOKUP_TOKEN}x`)).toBe(false);
    expect(tokensEqual(LOOKUP_TOKEN, LOOKUP_TOKEN.slice(0, -1))).toBe(false);
    expect(tokensEqual(LOOKUP_TOKEN, LOOKUP_TOKEN.toLowerCase())).toBe(false);
    expect(tokensEqual('', '')).toBe(true);
    expect(tokensEqual('', 'a')).toBe(false);
    expect(tokensEqual('ä', 'a')).toBe(false);
  });
});

describe('AgentState.authorizeCommand', () => {
  it('before lookup without a token: only read-only commands', () => {
    const s = new AgentState(null, false);
    expect(s.authorizeCommand(undefined, true)).toBe(true);
    expect(s.authorizeCommand('anything', true)).toBe(true);
    expect(s.authorizeCommand(undefined, false)).toBe(false);
    expect(s.authorizeCommand('anything', false)).toBe(false);
  });

  it('standalone without a token: everything', () => {
    const s = new AgentState(null, true);
    expect(s.authorizeCommand(undefined, false)).toBe(true);
    expect(s.authorizeCommand('x', false)).toBe(true);
  });

  it('after a lookup that gave no token (Ironic < 1.62): everything', () => {
    const s = new AgentState(null, false);
    s.applyLookup(NODE, { heartbeat_timeout: 300, agent_token: null }, 300);
    expect(s.token).toBeNull();
    expect(s.lookedUp).toBe(true);
    expect(s.authorizeCommand(undefined, false)).toBe(true);
  });

  it('after a lookup with a token: exactly that token, for every command', () => {
    const s = new AgentState(null, false);
    s.applyLookup(NODE, { heartbeat_timeout: 300, agent_token: LOOKUP_TOKEN, agent_token_required: true }, 300);
    expect(s.token).toBe(LOOKUP_TOKEN);
    expect(s.authorizeCommand(LOOKUP_TOKEN, false)).toBe(true);
    expect(s.authorizeCommand(LOOKUP_TOKEN, true)).toBe(true);
    expect(s.authorizeCommand(undefined, false)).toBe(false);
    expect(s.authorizeCommand(undefined, true)).toBe(false);
    expect(s.authorizeCommand(`${LOOKUP_TOKEN}x`, false)).toBe(false);
    expect(s.authorizeCommand('', false)).toBe(false);
  });

  it('a kernel token (virtual media) is required from the start, also in standalone mode', () => {
    for (const standalone of [false, true]) {
      const s = new AgentState(KERNEL_TOKEN, standalone);
      expect(s.authorizeCommand(KERNEL_TOKEN, false)).toBe(true);
      expect(s.authorizeCommand(undefined, true)).toBe(false);
      expect(s.authorizeCommand(LOOKUP_TOKEN, false)).toBe(false);
    }
  });

  it('"******" from lookup keeps the token it has', () => {
    const s = new AgentState(KERNEL_TOKEN, false);
    s.applyLookup(NODE, { heartbeat_timeout: 300, agent_token: '******' }, 300);
    expect(s.token).toBe(KERNEL_TOKEN);
    expect(s.authorizeCommand(KERNEL_TOKEN, false)).toBe(true);
    expect(s.authorizeCommand('******', false)).toBe(false);
    // Without any token, "******" leaves the agent token-less (no one can ever send the masked value).
    const t = new AgentState(null, false);
    t.applyLookup(NODE, { heartbeat_timeout: 300, agent_token: '******' }, 300);
    expect(t.token).toBeNull();
  });

  it('ignores tokens shorter than 32 characters and non-strings', () => {
    const s = new AgentState(null, false);
    s.applyLookup(NODE, { heartbeat_timeout: 300, agent_token: 'short' }, 300);
    expect(s.token).toBeNull();
    s.applyLookup(NODE, { heartbeat_timeout: 300, agent_token: 12345 }, 300);
    expect(s.token).toBeNull();
    s.applyLookup(NODE, { heartbeat_timeout: 300, agent_token: 'a'.repeat(32) }, 300);
    expect(s.token).toBe('a'.repeat(32));
  });

  it('a lookup token replaces a kernel token', () => {
    const s = new AgentState(KERNEL_TOKEN, false);
    s.applyLookup(NODE, { heartbeat_timeout: 300, agent_token: LOOKUP_TOKEN }, 300);
    expect(s.token).toBe(LOOKUP_TOKEN);
    expect(s.authorizeCommand(KERNEL_TOKEN, false)).toBe(false);
  });

  it('records the node, config and heartbeat timeout', () => {
    const s = new AgentState(null, false);
    const config = { heartbeat_timeout: 120, agent_token: LOOKUP_TOKEN, permitted_image_formats: ['raw'] };
    s.applyLookup(NODE, config, 120);
    expect(s.node).toBe(NODE);
    expect(s.conductorConfig).toBe(config);
    expect(s.heartbeatTimeout).toBe(120);
  });
});

describe('AgentState.resetForReboot', () => {
  it('forgets node, lookup token and deploy results, restoring the kernel token', () => {
    const s = new AgentState(KERNEL_TOKEN, false);
    s.applyLookup(NODE, { heartbeat_timeout: 300, agent_token: LOOKUP_TOKEN }, 300);
    s.partitionUuids = { 'root uuid': '0x1a2b3c4d' };
    s.resetForReboot();
    expect(s.token).toBe(KERNEL_TOKEN);
    expect(s.node).toBeNull();
    expect(s.lookedUp).toBe(false);
    expect(s.heartbeatTimeout).toBeNull();
    expect(s.partitionUuids).toEqual({});
    expect(s.conductorConfig).toEqual({});
    expect(s.authorizeCommand(LOOKUP_TOKEN, false)).toBe(false);
    expect(s.authorizeCommand(KERNEL_TOKEN, false)).toBe(true);
  });

  it('without a kernel token: back to read-only until the next lookup', () => {
    const s = new AgentState(null, false);
    s.applyLookup(NODE, { heartbeat_timeout: 300, agent_token: LOOKUP_TOKEN }, 300);
    s.resetForReboot();
    expect(s.token).toBeNull();
    expect(s.authorizeCommand(undefined, false)).toBe(false);
    expect(s.authorizeCommand(undefined, true)).toBe(true);
  });
});

describe('AgentState.authorizeRead', () => {
  it('GETs need no token (the 2023.1 conductor sends none), but a wrong one is refused', () => {
    const s = new AgentState(null, false);
    expect(s.authorizeRead(undefined)).toBe(true);
    expect(s.authorizeRead('whatever')).toBe(true); // nothing to compare with
    s.applyLookup(NODE, { heartbeat_timeout: 300, agent_token: LOOKUP_TOKEN }, 300);
    expect(s.authorizeRead(undefined)).toBe(true);
    expect(s.authorizeRead(LOOKUP_TOKEN)).toBe(true);
    expect(s.authorizeRead('wrong')).toBe(false);
    expect(s.authorizeRead('')).toBe(false);
  });
});
