// Compiled validators for the wire schemas, with errors phrased for humans.
import type { TSchema, Static } from 'typebox';
import { Compile } from 'typebox/compile';

type Validator = ReturnType<typeof Compile>;
const compiled = new WeakMap<TSchema, Validator>();

function validatorFor(schema: TSchema): Validator {
  let v = compiled.get(schema);
  if (!v) {
    v = Compile(schema);
    compiled.set(schema, v);
  }
  return v;
}

/** Problems of `value` against `schema`, one line each, empty when valid. */
export function schemaErrors(schema: TSchema, value: unknown, max = 5): string[] {
  const v = validatorFor(schema);
  if (v.Check(value)) return [];
  const out: string[] = [];
  for (const e of v.Errors(value)) {
    const line = `${e.instancePath || '/'} ${e.message}`;
    // A union reports one line per member ("must be equal to constant" × n): keep one of each.
    if (!out.includes(line)) out.push(line);
    if (out.length >= max) break;
  }
  return out.length > 0 ? out : ['/ is invalid'];
}

export function isValid<S extends TSchema>(schema: S, value: unknown): value is Static<S> {
  return validatorFor(schema).Check(value);
}

export class SchemaError extends Error {
  constructor(
    readonly what: string,
    readonly problems: string[],
  ) {
    super(`${what} is invalid: ${problems.join('; ')}`);
    this.name = 'SchemaError';
  }
}

/** Returns `value` typed by `schema`, or throws a SchemaError naming `what` was wrong. */
export function parseWith<S extends TSchema>(schema: S, value: unknown, what: string): Static<S> {
  const problems = schemaErrors(schema, value);
  if (problems.length > 0) throw new SchemaError(what, problems);
  return value as Static<S>;
}
