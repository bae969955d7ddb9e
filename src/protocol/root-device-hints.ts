// Root-device hints (ironic-lib / oslo specs matcher): each value is a plain value or an operator expression.
import Type, { type Static } from 'typebox';

const StringHint = Type.String({ description: 'value, or an operator expression such as "s== x", "<in> x", "<or> a <or> b"' });
const NumberHint = Type.Union([Type.Integer(), Type.String()], {
  description: 'integer, or an operator expression such as ">= 100"',
});

export const RootDeviceHints = Type.Object(
  {
    size: Type.Optional(NumberHint),
    model: Type.Optional(StringHint),
    vendor: Type.Optional(StringHint),
    serial: Type.Optional(StringHint),
    wwn: Type.Optional(StringHint),
    wwn_with_extension: Type.Optional(StringHint),
    wwn_vendor_extension: Type.Optional(StringHint),
    hctl: Type.Optional(StringHint),
    by_path: Type.Optional(StringHint),
    name: Type.Optional(StringHint),
    rotational: Type.Optional(Type.Union([Type.Boolean(), Type.String()])),
    tran: Type.Optional(StringHint),
  },
  { $id: 'RootDeviceHints', additionalProperties: false },
);
export type RootDeviceHints = Static<typeof RootDeviceHints>;
