// The agent's command API: request, result object and listing (IPA 9.4.3 shapes).
import Type, { type Static } from 'typebox';
import { CommandError } from './errors.js';

export const COMMAND_STATUSES = ['RUNNING', 'SUCCEEDED', 'FAILED', 'CLEAN_VERSION_MISMATCH'] as const;

export const CommandStatus = Type.Union(
  [Type.Literal('RUNNING'), Type.Literal('SUCCEEDED'), Type.Literal('FAILED'), Type.Literal('CLEAN_VERSION_MISMATCH')],
  { $id: 'CommandStatus' },
);
export type CommandStatus = (typeof COMMAND_STATUSES)[number];

/** POST /v1/commands/ body. */
export const CommandRequest = Type.Object(
  {
    name: Type.String({ description: '<extension>.<command>, e.g. clean.execute_clean_step' }),
    params: Type.Record(Type.String(), Type.Unknown()),
    agent_token: Type.Optional(Type.String({ description: 'Ferrum also accepts the token in the body' })),
  },
  { $id: 'CommandRequest', additionalProperties: true },
);
export type CommandRequest = Static<typeof CommandRequest>;

/** Query string of POST /v1/commands/ and GET /v1/commands/<id>. */
export const CommandQuery = Type.Object(
  {
    wait: Type.Optional(Type.String({ description: '"true" (any case) waits for the command' })),
    agent_token: Type.Optional(Type.String()),
  },
  { $id: 'CommandQuery', additionalProperties: true },
);
export type CommandQuery = Static<typeof CommandQuery>;

/** A command result object: exactly IPA's keys. `command_name` is the short name. */
export const CommandResult = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    command_name: Type.String(),
    command_status: CommandStatus,
    command_error: Type.Union([Type.Null(), CommandError]),
    command_result: Type.Unknown({ description: 'null or the JSON the command returned' }),
  },
  { $id: 'CommandResult', additionalProperties: false },
);
export type CommandResult = Static<typeof CommandResult>;

/** GET /v1/commands/ */
export const CommandList = Type.Object(
  { commands: Type.Array(CommandResult) },
  { $id: 'CommandList', additionalProperties: false },
);
export type CommandList = Static<typeof CommandList>;

/** True when an IPA `wait` query value asks to wait. */
export function isWaitTrue(value: unknown): boolean {
  return typeof value === 'string' && value.toLowerCase() === 'true';
}
