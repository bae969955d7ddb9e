// The hardware inventory, field for field as IPA reports it (9.4.3 plus the [master] extras).
import Type, { type Static } from 'typebox';

const NullableString = Type.Union([Type.String(), Type.Null()]);
const NullableInteger = Type.Union([Type.Integer(), Type.Null()]);

export const InventoryCpu = Type.Object(
  {
    model_name: NullableString,
    frequency: NullableString,
    count: Type.Integer({ minimum: 0 }),
    architecture: Type.String(),
    flags: Type.Array(Type.String()),
    socket_count: Type.Optional(NullableInteger),
  },
  { $id: 'InventoryCpu', additionalProperties: true },
);
export type InventoryCpu = Static<typeof InventoryCpu>;

export const InventoryMemory = Type.Object(
  { total: Type.Integer({ minimum: 0 }), physical_mb: NullableInteger },
  { $id: 'InventoryMemory', additionalProperties: true },
);
export type InventoryMemory = Static<typeof InventoryMemory>;

export const InventoryDisk = Type.Object(
  {
    name: Type.String(),
    model: NullableString,
    size: Type.Integer({ minimum: 0 }),
    rotational: Type.Boolean(),
    wwn: NullableString,
    serial: NullableString,
    vendor: NullableString,
    wwn_with_extension: NullableString,
    wwn_vendor_extension: NullableString,
    hctl: NullableString,
    by_path: NullableString,
    uuid: Type.Optional(NullableString),
    partuuid: Type.Optional(NullableString),
    logical_sectors: Type.Optional(NullableInteger),
    physical_sectors: Type.Optional(NullableInteger),
    tran: Type.Optional(NullableString),
  },
  { $id: 'InventoryDisk', additionalProperties: true },
);
export type InventoryDisk = Static<typeof InventoryDisk>;

export const LldpTlv = Type.Tuple([Type.Integer(), Type.String()]);

export const InventoryInterface = Type.Object(
  {
    name: Type.String(),
    mac_address: Type.String(),
    ipv4_address: NullableString,
    ipv6_address: NullableString,
    has_carrier: Type.Boolean(),
    lldp: Type.Union([Type.Null(), Type.Array(LldpTlv)]),
    vendor: NullableString,
    product: NullableString,
    client_id: NullableString,
    biosdevname: NullableString,
    speed_mbps: Type.Optional(NullableInteger),
    pci_address: Type.Optional(NullableString),
    driver: Type.Optional(NullableString),
  },
  { $id: 'InventoryInterface', additionalProperties: true },
);
export type InventoryInterface = Static<typeof InventoryInterface>;

export const InventoryFirmware = Type.Object(
  { vendor: Type.String(), version: Type.String(), build_date: Type.String() },
  { $id: 'InventoryFirmware', additionalProperties: true },
);

export const InventorySystemVendor = Type.Object(
  {
    product_name: Type.String(),
    serial_number: Type.String(),
    manufacturer: Type.String(),
    firmware: Type.Optional(InventoryFirmware),
  },
  { $id: 'InventorySystemVendor', additionalProperties: true },
);
export type InventorySystemVendor = Static<typeof InventorySystemVendor>;

export const InventoryBoot = Type.Object(
  {
    current_boot_mode: Type.Union([Type.Literal('uefi'), Type.Literal('bios')]),
    pxe_interface: NullableString,
  },
  { $id: 'InventoryBoot', additionalProperties: true },
);
export type InventoryBoot = Static<typeof InventoryBoot>;

export const Inventory = Type.Object(
  {
    interfaces: Type.Array(InventoryInterface),
    cpu: InventoryCpu,
    disks: Type.Array(InventoryDisk),
    memory: InventoryMemory,
    bmc_address: NullableString,
    bmc_v6address: NullableString,
    bmc_mac: Type.Optional(Type.String()),
    system_vendor: InventorySystemVendor,
    boot: InventoryBoot,
    hostname: Type.String(),
  },
  { $id: 'Inventory', additionalProperties: true },
);
export type Inventory = Static<typeof Inventory>;
