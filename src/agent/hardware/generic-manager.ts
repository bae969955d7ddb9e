// The generic hardware manager: IPA's GenericHardwareManager name, version and step listing,
// limited to the steps Ferrum implements.
import type { Step } from '../../protocol/steps.js';
import type { HardwareManager } from './managers.js';
import { eraseDevices, eraseDevicesMetadata } from './erase.js';
import { erasePstore } from './pstore.js';
import { guardEnabled } from './protected-devices.js';
import { checkImageInfo, runImageWrite } from '../image/image-commands.js';
import { createSoftwareRaid, deleteSoftwareRaid } from './software-raid.js';

/** IPA 9.4.3 reports generic_hardware_manager 1.1; Ironic compares it between step listing and execution. */
export const GENERIC_MANAGER_VERSION = '1.1';

export function genericHardwareManager(): HardwareManager {
  const clean = (step: string, priority: number): Step => ({
    step,
    priority,
    interface: 'deploy',
    reboot_requested: false,
    abortable: true,
  });
  return {
    name: 'generic_hardware_manager',
    version: GENERIC_MANAGER_VERSION,
    className: 'GenericHardwareManager',
    supportLevel: 1,
    cleanSteps: () => [
      clean('erase_devices', 10),
      clean('erase_devices_metadata', 99),
      clean('erase_pstore', 0),
      { ...clean('delete_configuration', 0), interface: 'raid' },
      { ...clean('create_configuration', 0), interface: 'raid' },
    ],
    deploySteps: () => [
      { step: 'erase_devices_metadata', priority: 0, interface: 'deploy', reboot_requested: false },
      { step: 'write_image', priority: 0, interface: 'deploy', reboot_requested: false },
    ],
    methods: {
      erase_devices: (ctx) => eraseDevices(ctx.host, ctx.node, ctx.log, guardEnabled(ctx.config.guardSpecialFilesystems, ctx.node)),
      erase_devices_metadata: (ctx) =>
        eraseDevicesMetadata(ctx.host, ctx.log, guardEnabled(ctx.config.guardSpecialFilesystems, ctx.node)),
      erase_pstore: (ctx) => erasePstore(ctx.host, ctx.log),
      // Software RAID from the node's target_raid_config (the agent RAID interface's clean steps).
      create_configuration: (ctx) => createSoftwareRaid(ctx.host, ctx.node as Record<string, unknown>, ctx.log),
      delete_configuration: (ctx) => deleteSoftwareRaid(ctx.host, ctx.log),
      // Ironic's direct deploy sends write_image as an in-band deploy step with image_info and configdrive.
      write_image: async (ctx) => {
        const info = checkImageInfo(ctx.args['image_info']);
        const configdrive = ctx.args['configdrive'];
        await runImageWrite(ctx.services, ctx.command, { imageInfo: info, configdrive: typeof configdrive === 'string' ? configdrive : null });
        return null;
      },
    },
  };
}
