// The error catalogue: IPA's error types with their HTTP codes and fixed messages.
// Ironic reads `type`, `message` and `details` of a command error, and `faultstring`
// of an HTTP error, so names and messages here are wire contract.
import Type, { type Static } from 'typebox';

/** An error inside a command result (`command_error`). */
export const CommandError = Type.Object(
  {
    type: Type.String({ description: 'IPA error class name, e.g. CleaningError' }),
    code: Type.Integer({ minimum: 100, maximum: 599 }),
    message: Type.String(),
    details: Type.String(),
  },
  { $id: 'CommandError', additionalProperties: true },
);
export type CommandError = Static<typeof CommandError>;

/** The body of an HTTP error answered by the agent (WSME-style, as IPA). */
export const FaultBody = Type.Object(
  {
    faultcode: Type.Union([Type.Literal('Client'), Type.Literal('Server')]),
    faultstring: Type.String(),
  },
  { $id: 'FaultBody', additionalProperties: false },
);
export type FaultBody = Static<typeof FaultBody>;

/** The body of an HTTP error answered by Ironic's API: a JSON string inside a JSON string. */
export const IronicErrorBody = Type.Object(
  { error_message: Type.String() },
  { $id: 'IronicErrorBody', additionalProperties: true },
);
export type IronicErrorBody = Static<typeof IronicErrorBody>;

interface CatalogueEntry {
  readonly code: number;
  readonly message: string;
}

/** IPA 9.4.3 error classes. `code` is both the HTTP status and `command_error.code`. */
export const ERROR_CATALOGUE = {
  RESTError: { code: 500, message: 'An error occurred' },
  InvalidContentError: { code: 400, message: 'Invalid request body' },
  InvalidCommandError: { code: 400, message: 'Invalid command' },
  InvalidCommandParamsError: { code: 400, message: 'Invalid command parameters' },
  NotFound: { code: 404, message: 'Not found' },
  RequestedObjectNotFoundError: { code: 404, message: 'Not found' },
  CommandExecutionError: { code: 500, message: 'Command execution failed' },
  AgentIsBusy: { code: 409, message: 'Agent is busy' },
  VersionMismatch: {
    code: 409,
    message: 'Hardware managers version mismatch, reload agent with correct version',
  },
  IronicAPIError: { code: 500, message: 'Error in call to ironic-api' },
  HeartbeatError: { code: 500, message: 'Error heartbeating to agent API' },
  LookupNodeError: { code: 500, message: 'Error getting configuration from Ironic' },
  LookupAgentIPError: { code: 500, message: 'Error finding IP for Ironic Agent' },
  ImageDownloadError: { code: 500, message: 'Error downloading image' },
  ImageChecksumError: { code: 500, message: 'Error verifying image checksum' },
  ImageWriteError: { code: 500, message: 'Error writing image to device' },
  SystemRebootError: { code: 500, message: 'Error rebooting system' },
  BlockDeviceEraseError: { code: 500, message: 'Error erasing block device' },
  BlockDeviceError: { code: 500, message: 'Block device caused unknown error' },
  SoftwareRAIDError: { code: 500, message: 'Software RAID caused unknown error' },
  UnknownNodeError: { code: 500, message: 'Agent is not associated with an Ironic node' },
  HardwareManagerNotFound: { code: 500, message: 'No valid HardwareManager found' },
  HardwareManagerMethodNotFound: { code: 500, message: 'No HardwareManager found to handle method' },
  IncompatibleHardwareMethodError: {
    code: 500,
    message: 'HardwareManager method is not compatible with hardware',
  },
  CleaningError: { code: 500, message: 'Clean step failed' },
  DeploymentError: { code: 500, message: 'Deploy step failed' },
  InvalidImage: { code: 500, message: 'The provided image is not valid for use' },
  ProtectedDeviceError: { code: 500, message: 'Protected device located, cleaning aborted.' },
  DeviceNotFound: {
    code: 404,
    message: 'Error finding the disk or partition device to deploy the image onto',
  },
  ClockSyncError: { code: 500, message: 'Error syncing system clock' },
  ISCSIError: { code: 500, message: 'Error starting iSCSI target' },
  ISCSICommandError: { code: 500, message: 'Error executing command for iSCSI' },
  /** Ferrum: a destructive command refused outside a deploy ramdisk or outside --devices. */
  UnsafeHostError: { code: 403, message: 'Refusing destructive operation on this host' },
} as const satisfies Record<string, CatalogueEntry>;

export type ErrorType = keyof typeof ERROR_CATALOGUE;

/** Error types that IPA reports with HTTP 4xx and never stores in the command history. */
export const CLIENT_ERROR_TYPES: ReadonlySet<ErrorType> = new Set([
  'InvalidContentError',
  'InvalidCommandError',
  'InvalidCommandParamsError',
]);
