// The lifecycle of a suite that sets up real things once for all its tests (a network namespace,
// loop devices, Ironic, the agent): one place for what each such suite needs.
import { afterAll, beforeAll, beforeEach } from 'vitest';

export interface Teardown {
  /** Runs one cleanup step; its failure is reported after every other step has run. */
  step(fn: () => unknown): Promise<void>;
  /** Leave state behind for inspection: the set-up or a test failed, or FERRUM_KEEP_TEST_STATE=1. */
  readonly keep: boolean;
}

export interface SuiteHooks {
  setUp(): Promise<void>;
  tearDown(t: Teardown): Promise<void>;
  /** If the process exits without afterAll (a crash, a killed runner): at least free what matters. Synchronous. */
  emergency(): void;
}

/**
 * Registers the suite's hooks. A set-up failure fails every test with its message, so a machine
 * that is not prepared shows as failures, never as skipped tests.
 */
export function suiteLifecycle(hooks: SuiteHooks): void {
  let failed = false;
  let setupError: unknown = null;
  beforeAll(async () => {
    process.once('exit', hooks.emergency);
    try {
      await hooks.setUp();
    } catch (err) {
      failed = true;
      setupError = err;
    }
  });
  beforeEach(({ onTestFailed }) => {
    if (setupError) throw setupError;
    onTestFailed(() => {
      failed = true;
    });
  });
  afterAll(async () => {
    const problems: unknown[] = [];
    const teardown: Teardown = {
      keep: failed || process.env['FERRUM_KEEP_TEST_STATE'] === '1',
      async step(fn) {
        try {
          await fn();
        } catch (err) {
          problems.push(err);
        }
      },
    };
    await hooks.tearDown(teardown);
    process.removeListener('exit', hooks.emergency);
    if (problems.length > 0) throw new AggregateError(problems, 'cleanup failed');
  });
}
