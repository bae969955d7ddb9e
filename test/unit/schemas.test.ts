import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { TSchema } from 'typebox';
import { collectSchemas } from '../../src/protocol/export-json-schemas.js';
import {
  AGENT_COMMANDS,
  CommandList,
  CommandResult,
  ExecuteCleanStepParams,
  ExecuteCleanStepResult,
  ExecuteDeployStepParams,
  FaultBody,
  GetCleanStepsResult,
  HeartbeatBody,
  ImageInfo,
  Inventory,
  IronicErrorBody,
  IronicRootDocument,
  LookupResponse,
  PartitionUuids,
  RootDeviceHints,
  Step,
  SchemaError,
  compareApiVersions,
  ironicFaultString,
  isValid,
  minApiVersion,
  parseWith,
  schemaErrors,
  isWaitTrue,
} from '../../src/protocol/index.js';

const FIXTURES = join(import.meta.dirname, '../fixtures/protocol');
const SCHEMA_DIR = join(import.meta.dirname, '../../schemas');
const fixture = <T = any>(name: string): T => JSON.parse(readFileSync(join(FIXTURES, name), 'utf8')) as T;
const clone = <T>(v: T): T => structuredClone(v);

function expectValid(schema: TSchema, value: unknown) {
  expect(schemaErrors(schema, value)).toEqual([]);
}
function expectInvalid(schema: TSchema, value: unknown, pattern: RegExp) {
  const problems = schemaErrors(schema, value);
  expect(problems.length).toBeGreaterThan(0);
  expect(problems.join('\n')).toMatch(pattern);
}

describe('samples from the protocol reference validate', () => {
  it('lookup response (21.4.4)', () => expectValid(LookupResponse, fixture('lookup-response-21.4.4.json')));
  it('legacy lookup response with top-level heartbeat_timeout', () =>
    expectValid(LookupResponse, { node: { uuid: '9f5c1e2a-3b4d-4c5e-8f60-718293a4b5c6' }, heartbeat_timeout: 300 }));
  it('lookup response below 1.62 (agent_token null)', () => {
    const doc = fixture('lookup-response-21.4.4.json');
    doc.config.agent_token = null;
    expectValid(LookupResponse, doc);
  });
  it('heartbeat body', () => expectValid(HeartbeatBody, fixture('heartbeat-body.json')));
  it('heartbeat body with only callback_url, and with agent_token null', () => {
    expectValid(HeartbeatBody, { callback_url: 'http://10.0.0.15:9999' });
    expectValid(HeartbeatBody, { callback_url: 'http://10.0.0.15:9999', agent_token: null, agent_version: '9.4.3' });
  });
  it('command results of every status, and the list', () => {
    const list = fixture('command-list.json');
    expectValid(CommandList, list);
    for (const c of list.commands) expectValid(CommandResult, c);
  });
  it('inventory (9.4.3 example)', () => expectValid(Inventory, fixture('inventory-9.4.3.json')));
  it('inventory with the [master] extras and LLDP TLVs', () => {
    const inv = fixture('inventory-9.4.3.json');
    inv.interfaces[0].lldp = [[1, '04885a92ec5459'], [2, '0545746865726e6574312f3138']];
    Object.assign(inv.interfaces[0], { speed_mbps: 25000, pci_address: '0000:18:00.0', driver: 'i40e' });
    Object.assign(inv.disks[0], { logical_sectors: 512, physical_sectors: 4096, tran: 'sas' });
    inv.cpu.socket_count = 2;
    inv.system_vendor.firmware = { vendor: 'American Megatrends', version: '1.4', build_date: '05/13/2022' };
    delete inv.bmc_mac;
    expectValid(Inventory, inv);
  });
  it('image_info of a whole-disk image', () => expectValid(ImageInfo, fixture('image-info-whole-disk.json')));
  it('image_info of a partition image', () => expectValid(ImageInfo, fixture('image-info-partition.json')));
  it('minimal image_info (id and urls)', () => expectValid(ImageInfo, { id: 'x', urls: ['http://a/b'] }));
  it('get_clean_steps result', () => expectValid(GetCleanStepsResult, fixture('get-clean-steps-result.json')));
  it('execute_clean_step params and result', () => {
    expectValid(ExecuteCleanStepParams, fixture('execute-clean-step-params.json'));
    expectValid(ExecuteCleanStepResult, fixture('execute-clean-step-result.json'));
  });
  it('execute_deploy_step params for write_image', () =>
    expectValid(ExecuteDeployStepParams, fixture('execute-deploy-step-write-image-params.json')));
  it('partition UUIDs (keys with spaces) and the whole-disk form', () => {
    expectValid(PartitionUuids, fixture('partition-uuids.json'));
    expectValid(PartitionUuids, { 'root uuid': '0x1a2b3c4d' });
    expectValid(PartitionUuids, {});
  });
  it('a step as Ironic echoes it (with requires_ramdisk and args)', () =>
    expectValid(Step, { step: 'erase_devices', interface: 'deploy', priority: 10, requires_ramdisk: true, args: { x: 1 }, abortable: true }));
  it('faults and Ironic error bodies', () => {
    expectValid(FaultBody, { faultcode: 'Client', faultstring: '401 Unauthorized: Token invalid.' });
    expectValid(IronicErrorBody, { error_message: '{"faultcode": "Client", "faultstring": "Node not found", "debuginfo": null}' });
    expectValid(IronicRootDocument, { default_version: { id: 'v1', version: '1.82', min_version: '1.1', status: 'CURRENT' } });
  });
  it('root device hints with operators', () =>
    expectValid(RootDeviceHints, { size: '>= 100', model: '<in> PERC', serial: 's== 00706F4E', rotational: false, name: '/dev/sda', hctl: '0:2:0:0' }));

  it('each command sample matches the catalogue entry of its command', () => {
    const params: Array<[keyof typeof AGENT_COMMANDS, unknown]> = [
      ['clean.execute_clean_step', fixture('execute-clean-step-params.json')],
      ['deploy.execute_deploy_step', fixture('execute-deploy-step-write-image-params.json')],
      ['standby.prepare_image', { image_info: fixture('image-info-whole-disk.json'), configdrive: null }],
      ['standby.cache_image', { image_info: fixture('image-info-partition.json'), force: false }],
      ['image.install_bootloader', { root_uuid: '0x1a2b3c4d', efi_system_part_uuid: null, prep_boot_part_uuid: null, target_boot_mode: 'uefi' }],
      ['rescue.finalize_rescue', { rescue_password: '$6$salt$hash', hashed: true }],
      ['clean.get_clean_steps', { node: { uuid: 'x' }, ports: [] }],
      ['standby.sync', {}],
      ['iscsi.start_iscsi_target', { iqn: null, wipe_disk_metadata: false, portal_port: 3260 }],
      ['flow.start_flow', { flow: [{ 'standby.sync': {} }] }],
    ];
    for (const [name, p] of params) expect(schemaErrors(AGENT_COMMANDS[name].params, p), name).toEqual([]);
    const results: Array<[keyof typeof AGENT_COMMANDS, unknown]> = [
      ['clean.get_clean_steps', fixture('get-clean-steps-result.json')],
      ['clean.execute_clean_step', fixture('execute-clean-step-result.json')],
      ['standby.get_partition_uuids', fixture('partition-uuids.json')],
      ['standby.prepare_image', { result: 'prepare_image: image (x) written to device /dev/sda root_uuid=0x1a2b3c4d' }],
      ['standby.power_off', null],
      ['standby.sync', null],
      ['poll.get_hardware_info', fixture('inventory-9.4.3.json')],
      ['log.collect_system_logs', { system_logs: 'H4sIAAAAAAAAA+3BAQ0AAADCoPdPbQ8HFAAAAAAAAAAAAAAAAAAAAA==' }],
      ['iscsi.start_iscsi_target', { iscsi_target_iqn: 'iqn.2008-10.org.openstack:9f5c1e2a' }],
    ];
    for (const [name, r] of results) expect(schemaErrors(AGENT_COMMANDS[name].result, r), name).toEqual([]);
  });
});

describe('broken messages are rejected with useful errors', () => {
  it('lookup response without node.uuid or with a bad heartbeat_timeout', () => {
    const doc = fixture('lookup-response-21.4.4.json');
    const noUuid = clone(doc);
    delete noUuid.node.uuid;
    expectInvalid(LookupResponse, noUuid, /\/node .*uuid/);
    const zero = clone(doc);
    zero.config.heartbeat_timeout = 0;
    expectInvalid(LookupResponse, zero, /\/config\/heartbeat_timeout/);
    const text = clone(doc);
    text.config.heartbeat_timeout = '300';
    expectInvalid(LookupResponse, text, /\/config\/heartbeat_timeout .*number/);
    expectInvalid(LookupResponse, [], /object/);
  });

  it('heartbeat body with an unknown field or without callback_url', () => {
    expectInvalid(HeartbeatBody, { callback_url: 'http://x:9999', agent_statuss: 'start' }, /agent_statuss|additional/i);
    expectInvalid(HeartbeatBody, { agent_token: 'x' }, /callback_url/);
    expectInvalid(HeartbeatBody, { callback_url: '' }, /\/callback_url/);
  });

  it('command results: unknown status, extra keys, bad id, malformed error', () => {
    const ok = fixture('command-list.json').commands[2];
    expectInvalid(CommandResult, { ...ok, command_status: 'VERIFYING' }, /\/command_status/);
    expectInvalid(CommandResult, { ...ok, command_params: {} }, /command_params|additional/i);
    expectInvalid(CommandResult, { ...ok, id: 'not-a-uuid' }, /\/id .*uuid/);
    expectInvalid(CommandResult, { ...ok, command_error: { type: 'CleaningError', code: 500, message: 'x' } }, /\/command_error/);
    const { command_result: _omitted, ...missing } = ok;
    expectInvalid(CommandResult, missing, /command_result/);
  });

  it('inventory with a wrong boot mode, a string size or a missing cpu', () => {
    const inv = fixture('inventory-9.4.3.json');
    expectInvalid(Inventory, { ...inv, boot: { current_boot_mode: 'legacy', pxe_interface: null } }, /\/boot\/current_boot_mode/);
    const str = clone(inv);
    str.disks[0].size = '3998614552576';
    expectInvalid(Inventory, str, /\/disks\/0\/size/);
    const { cpu: _cpu, ...noCpu } = inv;
    expectInvalid(Inventory, noCpu, /cpu/);
  });

  it('image_info without urls, with empty urls or without id', () => {
    const info = fixture('image-info-whole-disk.json');
    expectInvalid(ImageInfo, { ...info, urls: [] }, /\/urls/);
    const { urls: _u, ...noUrls } = info;
    expectInvalid(ImageInfo, noUrls, /urls/);
    const { id: _i, ...noId } = info;
    expectInvalid(ImageInfo, noId, /id/);
    expectInvalid(ImageInfo, { ...info, stream_raw_images: 'yes' }, /\/stream_raw_images/);
  });

  it('steps results with extra keys or steps missing priority', () => {
    const res = fixture('get-clean-steps-result.json');
    expectInvalid(GetCleanStepsResult, { ...res, extra: 1 }, /extra|additional/i);
    const bad = clone(res);
    delete bad.clean_steps.GenericHardwareManager[0].priority;
    expectInvalid(GetCleanStepsResult, bad, /\/clean_steps\/GenericHardwareManager\/0 .*priority/);
    expectInvalid(ExecuteCleanStepParams, { step: { interface: 'deploy' } }, /\/step .*step/);
  });

  it('root device hints with an unknown key', () => {
    expectInvalid(RootDeviceHints, { size: 100, colour: 'blue' }, /colour|additional/i);
  });

  it('schemaErrors caps the list and parseWith names what was wrong', () => {
    expect(schemaErrors(Inventory, {})).toEqual([
      '/ must have required properties interfaces, cpu, disks, memory, bmc_address, bmc_v6address, system_vendor, boot, hostname',
    ]);
    expect(schemaErrors(Inventory, { interfaces: 'x', cpu: 1, disks: 2, memory: 3 }, 2)).toHaveLength(2);
    // A union's members are not repeated one line each.
    const status = schemaErrors(CommandResult, { ...fixture('command-list.json').commands[0], command_status: 'VERIFYING' });
    expect(status).toEqual(['/command_status must be equal to constant', '/command_status must match a schema in anyOf']);
    expect(() => parseWith(HeartbeatBody, { agent_version: 1 }, 'heartbeat body')).toThrow(SchemaError);
    try {
      parseWith(HeartbeatBody, { agent_version: 1 }, 'heartbeat body');
    } catch (err) {
      expect((err as SchemaError).what).toBe('heartbeat body');
      expect((err as Error).message).toMatch(/^heartbeat body is invalid: .*callback_url/);
    }
    const body = { callback_url: 'http://x:1' };
    expect(parseWith(HeartbeatBody, body, 'heartbeat body')).toBe(body);
    expect(isValid(HeartbeatBody, body)).toBe(true);
    expect(isValid(HeartbeatBody, {})).toBe(false);
  });
});

describe('schemas/*.schema.json', () => {
  const collected = collectSchemas();
  const files = readdirSync(SCHEMA_DIR).filter((f) => f.endsWith('.json'));

  it('has exactly one file per collected schema', () => {
    expect(files.sort()).toEqual([...collected.keys()].map((id) => `${id}.schema.json`).sort());
    expect(collected.size).toBeGreaterThan(40);
  });

  it.each(files)('%s is valid JSON with its $id and up to date (run `npm run build` after a schema change)', (file) => {
    const text = readFileSync(join(SCHEMA_DIR, file), 'utf8');
    const doc = JSON.parse(text) as Record<string, unknown>;
    const id = file.replace(/\.schema\.json$/, '');
    expect(doc['$id']).toBe(id);
    expect(doc['$schema']).toBe('https://json-schema.org/draft/2020-12/schema');
    const schema = collected.get(id);
    expect(schema, `${id} is not exported by collectSchemas()`).toBeDefined();
    const expected = JSON.stringify({ $schema: 'https://json-schema.org/draft/2020-12/schema', ...(schema as object), $id: id }, null, 2) + '\n';
    expect(text).toBe(expected);
  });

  it('contains the command catalogue', () => {
    for (const name of Object.keys(AGENT_COMMANDS)) {
      expect(files).toContain(`command.${name}.params.schema.json`);
      expect(files).toContain(`command.${name}.result.schema.json`);
    }
  });
});

describe('API versions', () => {
  it('compares numerically, not as strings', () => {
    expect(compareApiVersions('1.9', '1.10')).toBeLessThan(0);
    expect(compareApiVersions('1.62', '1.62')).toBe(0);
    expect(compareApiVersions('1.82', '1.68')).toBeGreaterThan(0);
    expect(compareApiVersions('2.0', '1.99')).toBeGreaterThan(0);
    expect(compareApiVersions('1.100', '1.62')).toBeGreaterThan(0);
  });

  it('minApiVersion', () => {
    expect(minApiVersion('1.82', '1.62')).toBe('1.62');
    expect(minApiVersion('1.46', '1.62')).toBe('1.46');
    expect(minApiVersion('1.100', '1.68')).toBe('1.68');
    expect(minApiVersion('1.9', '1.10')).toBe('1.9');
  });
});

describe('ironicFaultString', () => {
  it('unwraps the JSON inside error_message', () => {
    const body = JSON.stringify({
      error_message: JSON.stringify({ faultcode: 'Client', faultstring: 'Invalid or missing agent token received.', debuginfo: null }),
    });
    expect(ironicFaultString(body)).toBe('Invalid or missing agent token received.');
  });

  it('falls back to error_message, then the raw body (truncated)', () => {
    expect(ironicFaultString(JSON.stringify({ error_message: 'plain text' }))).toBe('plain text');
    expect(ironicFaultString(JSON.stringify({ error_message: '{"faultcode": "Server"}' }))).toBe('{"faultcode": "Server"}');
    expect(ironicFaultString('<html>502 Bad Gateway</html>')).toBe('<html>502 Bad Gateway</html>');
    expect(ironicFaultString('x'.repeat(800))).toHaveLength(500);
    expect(ironicFaultString('{"message": "other"}')).toBe('{"message": "other"}');
    expect(ironicFaultString('')).toBe('');
  });
});

describe('isWaitTrue', () => {
  it('is true only for "true" in any case', () => {
    expect(['true', 'True', 'TRUE'].map(isWaitTrue)).toEqual([true, true, true]);
    expect(['1', 'yes', 'false', '', undefined, true].map(isWaitTrue)).toEqual([false, false, false, false, false, false]);
  });
});
