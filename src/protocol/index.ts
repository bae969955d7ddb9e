// The wire contract shared by the agent and the conductor side.
export * from './errors.js';
export * from './commands.js';
export * from './api-root.js';
export * from './ironic-api.js';
export * from './steps.js';
export * from './root-device-hints.js';
export * from './image-info.js';
export * from './inventory.js';
export * from './agent-commands.js';
export * from './validate.js';
