import { describe, expect, it } from 'vitest';
import { AgentError, asAgentError, errors } from '../../src/agent/errors.js';
import { CLIENT_ERROR_TYPES, CommandError, ERROR_CATALOGUE, FaultBody, type ErrorType } from '../../src/protocol/errors.js';
import { schemaErrors } from '../../src/protocol/validate.js';

const TYPES = Object.keys(ERROR_CATALOGUE) as ErrorType[];

describe('the error catalogue', () => {
  it.each(TYPES)('%s serialises to {type, code, message, details} and a fault', (type) => {
    const { code, message } = ERROR_CATALOGUE[type];
    const err = new AgentError(type, 'the details');
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe(type);
    expect(err.code).toBe(code);
    expect(err.message).toBe(`${message}: the details`);
    expect(err.toCommandError()).toEqual({ type, code, message, details: 'the details' });
    expect(Object.keys(err.toCommandError())).toEqual(['type', 'code', 'message', 'details']);
    expect(err.toFault()).toEqual({ faultcode: code >= 500 ? 'Server' : 'Client', faultstring: `${message}: the details` });
    expect(schemaErrors(CommandError, err.toCommandError())).toEqual([]);
    expect(schemaErrors(FaultBody, err.toFault())).toEqual([]);
  });

  it('has IPA 9.4.3 codes and messages for the errors Ironic sees', () => {
    const expected: Partial<Record<ErrorType, [number, string]>> = {
      InvalidContentError: [400, 'Invalid request body'],
      InvalidCommandError: [400, 'Invalid command'],
      InvalidCommandParamsError: [400, 'Invalid command parameters'],
      RequestedObjectNotFoundError: [404, 'Not found'],
      NotFound: [404, 'Not found'],
      DeviceNotFound: [404, 'Error finding the disk or partition device to deploy the image onto'],
      AgentIsBusy: [409, 'Agent is busy'],
      VersionMismatch: [409, 'Hardware managers version mismatch, reload agent with correct version'],
      CommandExecutionError: [500, 'Command execution failed'],
      CleaningError: [500, 'Clean step failed'],
      DeploymentError: [500, 'Deploy step failed'],
      ProtectedDeviceError: [500, 'Protected device located, cleaning aborted.'],
      ImageDownloadError: [500, 'Error downloading image'],
      ImageChecksumError: [500, 'Error verifying image checksum'],
      ImageWriteError: [500, 'Error writing image to device'],
      InvalidImage: [500, 'The provided image is not valid for use'],
      BlockDeviceEraseError: [500, 'Error erasing block device'],
      SoftwareRAIDError: [500, 'Software RAID caused unknown error'],
      SystemRebootError: [500, 'Error rebooting system'],
      ClockSyncError: [500, 'Error syncing system clock'],
      IncompatibleHardwareMethodError: [500, 'HardwareManager method is not compatible with hardware'],
      HardwareManagerMethodNotFound: [500, 'No HardwareManager found to handle method'],
      UnknownNodeError: [500, 'Agent is not associated with an Ironic node'],
      LookupNodeError: [500, 'Error getting configuration from Ironic'],
      LookupAgentIPError: [500, 'Error finding IP for Ironic Agent'],
    };
    for (const [type, [code, message]] of Object.entries(expected) as Array<[ErrorType, [number, string]]>) {
      expect(ERROR_CATALOGUE[type], type).toEqual({ code, message });
    }
  });

  it('lists exactly the 400 types as client errors', () => {
    expect([...CLIENT_ERROR_TYPES].sort()).toEqual(TYPES.filter((t) => ERROR_CATALOGUE[t].code === 400).sort());
  });

  it('faultcode is Server exactly for codes >= 500', () => {
    expect(new AgentError('UnsafeHostError', 'x').toFault().faultcode).toBe('Client'); // 403
    expect(new AgentError('AgentIsBusy', 'x').toFault().faultcode).toBe('Client'); // 409
    expect(new AgentError('RESTError', 'x').toFault().faultcode).toBe('Server'); // 500
  });

  it('a custom message replaces the class message', () => {
    const err = new AgentError('CleaningError', 'd', { message: 'custom' });
    expect(err.toCommandError().message).toBe('custom');
    expect(err.toFault().faultstring).toBe('custom: d');
  });
});

describe('error helpers', () => {
  it('phrase details as IPA does', () => {
    expect(errors.notFound('Extension', 'nosuch').toCommandError()).toEqual({
      type: 'RequestedObjectNotFoundError',
      code: 404,
      message: 'Not found',
      details: 'Extension with id nosuch not found.',
    });
    expect(errors.busy('prepare_image').toFault().faultstring).toBe('Agent is busy: executing command prepare_image');
    expect(errors.methodNotFound('erase_devices').details).toBe('Could not find method: erase_devices');
    expect(errors.invalidContent('x').type).toBe('InvalidContentError');
    expect(errors.invalidParams('x').type).toBe('InvalidCommandParamsError');
    expect(errors.deployment('x').type).toBe('DeploymentError');
    expect(errors.eraseFailed('x').type).toBe('BlockDeviceEraseError');
    expect(errors.unsafeHost('x').code).toBe(403);
    expect(errors.versionMismatch({ a: '1' }, { a: '2' }).details).toBe('Current versions: {"a":"1"}, versions used by ironic: {"a":"2"}');
  });

  it('ProtectedDeviceError uses its details as the message, as IPA does', () => {
    const err = errors.protectedDevice('/dev/sdb1', 'IBM GPFS partition');
    const ce = err.toCommandError();
    expect(ce.type).toBe('ProtectedDeviceError');
    expect(ce.message).toBe(ce.details);
    expect(ce.details).toMatch(/^Protected IBM GPFS partition located on device \/dev\/sdb1\. This volume or contents may be a shared block device\./);
  });
});

describe('asAgentError', () => {
  it('keeps agent errors as they are', () => {
    const e = errors.cleaning('x');
    expect(asAgentError(e)).toBe(e);
  });

  it('wraps other errors as CommandExecutionError with the original message as details and cause', () => {
    const orig = new RangeError('out of range');
    const e = asAgentError(orig);
    expect(e.type).toBe('CommandExecutionError');
    expect(e.code).toBe(500);
    expect(e.details).toBe('out of range');
    expect(e.cause).toBe(orig);
    expect(e.toFault()).toEqual({ faultcode: 'Server', faultstring: 'Command execution failed: out of range' });
  });

  it('wraps thrown non-errors too', () => {
    expect(asAgentError('plain string').details).toBe('plain string');
    expect(asAgentError(42).details).toBe('42');
    expect(asAgentError(undefined).details).toBe('undefined');
  });
});
