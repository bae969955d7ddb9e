// AgentError: an error of the catalogue, as IPA serialises it into command_error and HTTP faults.
import { ERROR_CATALOGUE, type CommandError, type ErrorType, type FaultBody } from '../protocol/errors.js';

export class AgentError extends Error {
  readonly type: ErrorType;
  readonly code: number;
  readonly details: string;
  /** The class message; ProtectedDeviceError replaces it with its details, as IPA does. */
  readonly errorMessage: string;

  constructor(type: ErrorType, details: string, opts: { message?: string; cause?: unknown } = {}) {
    const entry = ERROR_CATALOGUE[type];
    const errorMessage = opts.message ?? entry.message;
    super(`${errorMessage}: ${details}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = type;
    this.type = type;
    this.code = entry.code;
    this.details = details;
    this.errorMessage = errorMessage;
  }

  toCommandError(): CommandError {
    return { type: this.type, code: this.code, message: this.errorMessage, details: this.details };
  }

  toFault(): FaultBody {
    return { faultcode: this.code >= 500 ? 'Server' : 'Client', faultstring: this.message };
  }
}

/** Wraps anything thrown by a command the way IPA does: agent errors stay, others become CommandExecutionError. */
export function asAgentError(err: unknown): AgentError {
  if (err instanceof AgentError) return err;
  const text = err instanceof Error ? err.message : String(err);
  return new AgentError('CommandExecutionError', text, { cause: err });
}

export const errors = {
  invalidContent: (details: string) => new AgentError('InvalidContentError', details),
  invalidCommand: (details: string) => new AgentError('InvalidCommandError', details),
  invalidParams: (details: string) => new AgentError('InvalidCommandParamsError', details),
  notFound: (what: string, id: string) => new AgentError('RequestedObjectNotFoundError', `${what} with id ${id} not found.`),
  busy: (commandName: string) => new AgentError('AgentIsBusy', `executing command ${commandName}`),
  versionMismatch: (agent: unknown, node: unknown) =>
    new AgentError('VersionMismatch', `Current versions: ${JSON.stringify(agent)}, versions used by ironic: ${JSON.stringify(node)}`),
  cleaning: (details: string) => new AgentError('CleaningError', details),
  deployment: (details: string) => new AgentError('DeploymentError', details),
  methodNotFound: (method: string) => new AgentError('HardwareManagerMethodNotFound', `Could not find method: ${method}`),
  eraseFailed: (details: string) => new AgentError('BlockDeviceEraseError', details),
  unsafeHost: (details: string) => new AgentError('UnsafeHostError', details),
  deviceNotFound: (details: string) => new AgentError('DeviceNotFound', details),
  protectedDevice: (device: string, what: string) => {
    const details =
      `Protected ${what} located on device ${device}. This volume or contents may be a shared block device. ` +
      'Please consult your storage administrator, and restart cleaning after either detaching the volumes, ' +
      'or instructing the agent to not protect contents.';
    return new AgentError('ProtectedDeviceError', details, { message: details });
  },
};
