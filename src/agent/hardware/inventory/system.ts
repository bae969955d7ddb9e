// system_vendor (with the [master] firmware block), boot mode and hostname.
import { hostname } from 'node:os';
import type { InventoryBoot, InventorySystemVendor } from '../../../protocol/inventory.js';
import type { Host } from '../../host/host.js';
import { smbiosString, type SmbiosStructure } from './smbios.js';

async function dmiId(host: Host, field: string): Promise<string | null> {
  const v = (await host.readTextOrNull(`/sys/class/dmi/id/${field}`))?.trim();
  return v ? v : null;
}

export async function collectSystemVendor(host: Host, smbios: SmbiosStructure[] | null): Promise<InventorySystemVendor> {
  const [product, serial, vendor, biosVendor, biosVersion, biosDate] = await Promise.all(
    ['product_name', 'product_serial', 'sys_vendor', 'bios_vendor', 'bios_version', 'bios_date'].map((f) => dmiId(host, f)),
  );
  // /sys/class/dmi/id is the kernel's copy of SMBIOS type 1 and 0; read the table if it is absent.
  const sys = smbios?.find((s) => s.type === 1);
  const bios = smbios?.find((s) => s.type === 0);
  return {
    product_name: product ?? (sys && smbiosString(sys, 0x05)) ?? '',
    serial_number: serial ?? (sys && smbiosString(sys, 0x07)) ?? '',
    manufacturer: vendor ?? (sys && smbiosString(sys, 0x04)) ?? '',
    firmware: {
      vendor: biosVendor ?? (bios && smbiosString(bios, 0x04)) ?? '',
      version: biosVersion ?? (bios && smbiosString(bios, 0x05)) ?? '',
      build_date: biosDate ?? (bios && smbiosString(bios, 0x08)) ?? '',
    },
  };
}

export async function collectBoot(host: Host, bootif: string | null): Promise<InventoryBoot> {
  return {
    current_boot_mode: (await host.exists('/sys/firmware/efi')) ? 'uefi' : 'bios',
    pxe_interface: bootif,
  };
}

export async function collectHostname(host: Host): Promise<string> {
  return (await host.readTextOrNull('/proc/sys/kernel/hostname'))?.trim() || hostname();
}
