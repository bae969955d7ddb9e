// Clean and deploy steps: listings, execution parameters and results.
import Type, { type Static } from 'typebox';

/** One step as the agent lists it and as Ironic sends it back (Ironic adds keys such as requires_ramdisk). */
export const Step = Type.Object(
  {
    step: Type.String({ minLength: 1 }),
    interface: Type.String({ minLength: 1 }),
    priority: Type.Integer(),
    reboot_requested: Type.Optional(Type.Boolean()),
    abortable: Type.Optional(Type.Boolean()),
    argsinfo: Type.Optional(Type.Union([Type.Null(), Type.Record(Type.String(), Type.Unknown())])),
    requires_ramdisk: Type.Optional(Type.Boolean()),
    args: Type.Optional(Type.Union([Type.Null(), Type.Record(Type.String(), Type.Unknown())])),
  },
  { $id: 'Step', additionalProperties: true },
);
export type Step = Static<typeof Step>;

/** A step as sent to execute_*_step: only `step` is mandatory for the agent (IPA checks just that). */
export const StepRequest = Type.Object(
  {
    step: Type.String({ minLength: 1 }),
    interface: Type.Optional(Type.String()),
    priority: Type.Optional(Type.Integer()),
    args: Type.Optional(Type.Union([Type.Null(), Type.Record(Type.String(), Type.Unknown())])),
  },
  { $id: 'StepRequest', additionalProperties: true },
);
export type StepRequest = Static<typeof StepRequest>;

/** hardware_manager_version: manager name → version. */
export const HardwareManagerVersions = Type.Record(Type.String(), Type.String(), {
  $id: 'HardwareManagerVersions',
});
export type HardwareManagerVersions = Static<typeof HardwareManagerVersions>;

/** Steps grouped by hardware manager class name (e.g. GenericHardwareManager). */
export const StepsByManager = Type.Record(Type.String(), Type.Array(Step), { $id: 'StepsByManager' });
export type StepsByManager = Static<typeof StepsByManager>;

export const Node = Type.Record(Type.String(), Type.Unknown(), {
  $id: 'Node',
  description: 'The Ironic node object (secrets masked)',
});
export type Node = Static<typeof Node>;

export const Ports = Type.Array(Type.Record(Type.String(), Type.Unknown()), { $id: 'Ports' });
export type Ports = Static<typeof Ports>;

export const GetStepsParams = Type.Object(
  { node: Type.Optional(Type.Union([Node, Type.Null()])), ports: Type.Optional(Type.Union([Ports, Type.Null()])) },
  { $id: 'GetStepsParams', additionalProperties: true },
);
export type GetStepsParams = Static<typeof GetStepsParams>;

export const GetCleanStepsResult = Type.Object(
  { clean_steps: StepsByManager, hardware_manager_version: HardwareManagerVersions },
  { $id: 'GetCleanStepsResult', additionalProperties: false },
);
export type GetCleanStepsResult = Static<typeof GetCleanStepsResult>;

export const GetDeployStepsResult = Type.Object(
  { deploy_steps: StepsByManager, hardware_manager_version: HardwareManagerVersions },
  { $id: 'GetDeployStepsResult', additionalProperties: false },
);
export type GetDeployStepsResult = Static<typeof GetDeployStepsResult>;

export const ExecuteCleanStepParams = Type.Object(
  {
    step: StepRequest,
    node: Type.Optional(Type.Union([Node, Type.Null()])),
    ports: Type.Optional(Type.Union([Ports, Type.Null()])),
    clean_version: Type.Optional(Type.Union([HardwareManagerVersions, Type.Null()])),
  },
  { $id: 'ExecuteCleanStepParams', additionalProperties: true },
);
export type ExecuteCleanStepParams = Static<typeof ExecuteCleanStepParams>;

export const ExecuteDeployStepParams = Type.Object(
  {
    step: StepRequest,
    node: Type.Optional(Type.Union([Node, Type.Null()])),
    ports: Type.Optional(Type.Union([Ports, Type.Null()])),
    deploy_version: Type.Optional(Type.Union([HardwareManagerVersions, Type.Null()])),
  },
  { $id: 'ExecuteDeployStepParams', additionalProperties: true },
);
export type ExecuteDeployStepParams = Static<typeof ExecuteDeployStepParams>;

export const ExecuteCleanStepResult = Type.Object(
  { clean_result: Type.Unknown(), clean_step: StepRequest },
  { $id: 'ExecuteCleanStepResult', additionalProperties: false },
);
export type ExecuteCleanStepResult = Static<typeof ExecuteCleanStepResult>;

export const ExecuteDeployStepResult = Type.Object(
  { deploy_result: Type.Unknown(), deploy_step: StepRequest },
  { $id: 'ExecuteDeployStepResult', additionalProperties: false },
);
export type ExecuteDeployStepResult = Static<typeof ExecuteDeployStepResult>;
