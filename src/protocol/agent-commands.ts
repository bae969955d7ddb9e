// Every agent command on the wire: its parameters, its result and whether it runs in the background.
// The agent binds implementations to these entries; the conductor's client derives typed methods from them.
import Type, { type Static, type TSchema } from 'typebox';
import { ImageInfo } from './image-info.js';
import { Inventory } from './inventory.js';
import {
  ExecuteCleanStepParams,
  ExecuteCleanStepResult,
  ExecuteDeployStepParams,
  ExecuteDeployStepResult,
  GetCleanStepsResult,
  GetDeployStepsResult,
  GetStepsParams,
} from './steps.js';

export type CommandMode = 'sync' | 'async';

export interface CommandSpec<P extends TSchema = TSchema, R extends TSchema = TSchema> {
  readonly mode: CommandMode;
  readonly params: P;
  readonly result: R;
}

const NoParams = Type.Object({}, { additionalProperties: true });
const NullResult = Type.Null();
/** Async commands returning a string report it as {"result": "<command>: <text>"}. */
const TextResult = Type.Union([Type.Null(), Type.Object({ result: Type.String() }, { additionalProperties: true })]);

export const PartitionUuids = Type.Object(
  {
    'root uuid': Type.Optional(Type.Union([Type.String(), Type.Null()])),
    'efi system partition uuid': Type.Optional(Type.Union([Type.String(), Type.Null()])),
    'PReP Boot partition uuid': Type.Optional(Type.Union([Type.String(), Type.Null()])),
    partitions: Type.Optional(Type.Record(Type.String(), Type.String())),
  },
  { $id: 'PartitionUuids', additionalProperties: true },
);
export type PartitionUuids = Static<typeof PartitionUuids>;

export const PrepareImageParams = Type.Object(
  { image_info: ImageInfo, configdrive: Type.Optional(Type.Union([Type.String(), Type.Null()])) },
  { $id: 'PrepareImageParams', additionalProperties: true },
);
export const CacheImageParams = Type.Object(
  {
    image_info: ImageInfo,
    force: Type.Optional(Type.Boolean()),
    configdrive: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  },
  { $id: 'CacheImageParams', additionalProperties: true },
);

export const InstallBootloaderParams = Type.Object(
  {
    root_uuid: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    efi_system_part_uuid: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    prep_boot_part_uuid: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    target_boot_mode: Type.Optional(Type.Union([Type.Literal('bios'), Type.Literal('uefi')])),
    ignore_bootloader_failure: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
  },
  { $id: 'InstallBootloaderParams', additionalProperties: true },
);

export const CollectSystemLogsResult = Type.Object(
  { system_logs: Type.String({ description: 'base64 of a gzipped tar' }) },
  { $id: 'CollectSystemLogsResult', additionalProperties: false },
);
export type CollectSystemLogsResult = Static<typeof CollectSystemLogsResult>;

export const FinalizeRescueParams = Type.Object(
  { rescue_password: Type.Optional(Type.String()), hashed: Type.Optional(Type.Boolean()) },
  { $id: 'FinalizeRescueParams', additionalProperties: true },
);

export const SetNodeInfoParams = Type.Object(
  { node_info: Type.Record(Type.String(), Type.Unknown()) },
  { $id: 'SetNodeInfoParams', additionalProperties: true },
);

export const StartIscsiTargetParams = Type.Object(
  {
    iqn: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    wipe_disk_metadata: Type.Optional(Type.Boolean()),
    portal_port: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: 65535 }), Type.Null()])),
  },
  { $id: 'StartIscsiTargetParams', additionalProperties: true },
);

export const StartFlowParams = Type.Object(
  { flow: Type.Array(Type.Record(Type.String(), Type.Record(Type.String(), Type.Unknown()))) },
  { $id: 'StartFlowParams', additionalProperties: true },
);

function spec<P extends TSchema, R extends TSchema>(mode: CommandMode, params: P, result: R): CommandSpec<P, R> {
  return { mode, params, result };
}

/** The wire catalogue of agent commands (IPA 9.4.3 names; iscsi as in IPA <= 7.x). */
export const AGENT_COMMANDS = {
  'clean.get_clean_steps': spec('sync', GetStepsParams, GetCleanStepsResult),
  'clean.execute_clean_step': spec('async', ExecuteCleanStepParams, ExecuteCleanStepResult),
  'deploy.get_deploy_steps': spec('sync', GetStepsParams, GetDeployStepsResult),
  'deploy.execute_deploy_step': spec('async', ExecuteDeployStepParams, ExecuteDeployStepResult),
  'standby.sync': spec('sync', NoParams, NullResult),
  'standby.power_off': spec('async', NoParams, TextResult),
  'standby.run_image': spec('async', NoParams, TextResult),
  'standby.get_partition_uuids': spec('sync', NoParams, PartitionUuids),
  'standby.prepare_image': spec('async', PrepareImageParams, TextResult),
  'standby.cache_image': spec('async', CacheImageParams, TextResult),
  'image.install_bootloader': spec('async', InstallBootloaderParams, TextResult),
  'log.collect_system_logs': spec('sync', NoParams, CollectSystemLogsResult),
  'poll.get_hardware_info': spec('sync', NoParams, Inventory),
  'poll.set_node_info': spec('sync', SetNodeInfoParams, NullResult),
  'rescue.finalize_rescue': spec('sync', FinalizeRescueParams, NullResult),
  'flow.start_flow': spec('async', StartFlowParams, TextResult),
  'iscsi.start_iscsi_target': spec(
    'sync',
    StartIscsiTargetParams,
    Type.Object({ iscsi_target_iqn: Type.String() }, { additionalProperties: true }),
  ),
} as const;

export type AgentCommandName = keyof typeof AGENT_COMMANDS;
export type CommandParams<N extends AgentCommandName> = Static<(typeof AGENT_COMMANDS)[N]['params']>;
export type CommandResultOf<N extends AgentCommandName> = Static<(typeof AGENT_COMMANDS)[N]['result']>;
