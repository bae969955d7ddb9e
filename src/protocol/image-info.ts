// image_info: what the conductor tells the agent about the image to write.
import Type, { type Static } from 'typebox';

const NullableString = Type.Union([Type.String(), Type.Null()]);

export const ImageInfo = Type.Object(
  {
    id: Type.String({ minLength: 1 }),
    urls: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }),
    disk_format: Type.Optional(NullableString),
    container_format: Type.Optional(NullableString),
    stream_raw_images: Type.Optional(Type.Boolean()),
    checksum: Type.Optional(NullableString),
    os_hash_algo: Type.Optional(NullableString),
    os_hash_value: Type.Optional(NullableString),
    proxies: Type.Optional(
      Type.Union([
        Type.Null(),
        Type.Object({ http: Type.Optional(Type.String()), https: Type.Optional(Type.String()) }, { additionalProperties: true }),
      ]),
    ),
    no_proxy: Type.Optional(NullableString),
    node_uuid: Type.Optional(NullableString),
    image_type: Type.Optional(NullableString),
    kernel: Type.Optional(NullableString),
    ramdisk: Type.Optional(NullableString),
    root_gb: Type.Optional(Type.Union([Type.Number(), Type.String(), Type.Null()])),
    root_mb: Type.Optional(Type.Union([Type.Number(), Type.Null()])),
    swap_mb: Type.Optional(Type.Union([Type.Number(), Type.Null()])),
    ephemeral_mb: Type.Optional(Type.Union([Type.Number(), Type.Null()])),
    ephemeral_format: Type.Optional(NullableString),
    preserve_ephemeral: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    deploy_boot_mode: Type.Optional(NullableString),
    boot_option: Type.Optional(NullableString),
    disk_label: Type.Optional(NullableString),
    configdrive: Type.Optional(NullableString),
    image_server_auth_strategy: Type.Optional(NullableString),
    image_server_user: Type.Optional(NullableString),
    image_server_password: Type.Optional(NullableString),
    image_request_authorization: Type.Optional(NullableString),
  },
  { $id: 'ImageInfo', additionalProperties: true },
);
export type ImageInfo = Static<typeof ImageInfo>;
