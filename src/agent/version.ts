// Versions the agent reports. Ironic records agent_version and compares nothing else, but peers
// written against IPA may key features on it, so the wire carries the IPA release we emulate.
export const FERRUM_VERSION = '0.1.0';
export const IPA_COMPAT_VERSION = '9.4.3';
