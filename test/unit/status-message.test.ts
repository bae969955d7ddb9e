import { describe, expect, it } from 'vitest';
import { CommandRecord } from '../../src/agent/executor.js';
import { AgentError } from '../../src/agent/errors.js';
import { commandStatusMessage, describeProgress, STATUS_MESSAGE_MAX } from '../../src/agent/status-message.js';
import type { ProgressSnapshot } from '../../src/agent/image/progress.js';

const GIB = 1024 ** 3;
const writing: ProgressSnapshot = {
  phase: 'writing',
  bytes_done: 1.2 * GIB,
  bytes_total: 2 * GIB,
  bytes_written: 0.3 * GIB,
  bytes_skipped: 0.9 * GIB,
  rate_bytes_per_s: 950e6,
  eta_s: 1,
  resumes: 2,
};

function record(name = 'execute_deploy_step'): CommandRecord {
  return new CommandRecord(name, `deploy.${name}`);
}

describe('heartbeat status message', () => {
  it('is null before any command', () => {
    expect(commandStatusMessage(undefined)).toBeNull();
  });

  it('gives a running image write its progress: phase, bytes of total, rate, ETA, zeros skipped, resumes', () => {
    const r = record();
    r.progress = () => writing;
    expect(commandStatusMessage(r, r.startedAt + 12_400)).toBe(
      'execute_deploy_step RUNNING for 12 s: writing 1.20 of 2.00 GiB (60 %), 950 MB/s, ETA 1 s, 0.90 GiB of zeros skipped, 2 resumes',
    );
  });

  it('leaves out what is not known or not happening', () => {
    expect(describeProgress({ ...writing, bytes_total: null, eta_s: null, bytes_skipped: 0, resumes: 0 })).toBe('writing 1.20 GiB, 950 MB/s');
    expect(describeProgress({ ...writing, phase: 'verifying', bytes_done: 2 * GIB, bytes_skipped: 0, resumes: 1 })).toBe('verifying 2.00 of 2.00 GiB (100 %), 1 resume');
  });

  it('says how long a command without progress has been running', () => {
    const r = record('execute_clean_step');
    expect(commandStatusMessage(r, r.startedAt + 3_000)).toBe('execute_clean_step RUNNING for 3 s');
  });

  it('says how the newest command ended, with the error of a failure', () => {
    const ok = record();
    ok.finish('SUCCEEDED', { deploy_result: null }, null);
    expect(commandStatusMessage(ok)).toMatch(/^execute_deploy_step SUCCEEDED after 0 s$/);
    const failed = record();
    failed.progress = () => writing; // a finished command's progress is not reported
    failed.finish('FAILED', null, new AgentError('ImageChecksumError', 'checksum mismatch for image img-1'));
    expect(commandStatusMessage(failed)).toMatch(/^execute_deploy_step FAILED after 0 s: .*checksum mismatch for image img-1$/);
  });

  it('is cut to a length Ironic keeps comfortably', () => {
    const failed = record();
    failed.finish('FAILED', null, new AgentError('CommandExecutionError', 'x'.repeat(1000)));
    const text = commandStatusMessage(failed)!;
    expect(text).toHaveLength(STATUS_MESSAGE_MAX);
    expect(text.endsWith('…')).toBe(true);
  });
});
