// Root-device hints with exactly the semantics of ironic-lib 5.3 (parse_root_device_hints,
// find_devices_by_hints) and oslo.utils 6.0.1's specs matcher, which IPA 9.4.3 uses: expressions
// are lowercased and URL-quoted on both sides, a missing operator means s== (strings) or == (size,
// in GiB), "=" means >=, rotational is compared as a boolean, and every hint must match. The
// grammar is a port of the pyparsing one (operators may be glued to their operand, trailing text
// is ignored), numbers are parsed as Python's float() does, and wherever ironic-lib raises (a
// numeric operator on a non-number, <all-in>, string operators on the size...) we raise too, with
// a clear DeviceNotFound, at the same point of the evaluation.
//
// Deliberate supersets: the `tran` hint ([master]), and a bare `name` without "/dev/" ("sda"),
// which ironic-lib compares literally and so never matches; we read it as /dev/sda.
import { errors } from '../errors.js';

export const HINT_TYPES = {
  size: 'int',
  model: 'str',
  wwn: 'str',
  serial: 'str',
  vendor: 'str',
  wwn_with_extension: 'str',
  wwn_vendor_extension: 'str',
  name: 'str',
  rotational: 'bool',
  hctl: 'str',
  by_path: 'str',
  tran: 'str',
} as const;

export type HintName = keyof typeof HINT_TYPES;
export type ParsedHints = Partial<Record<HintName, string | boolean>>;

/** Something ironic-lib raises on (ValueError, TypeError, pyparsing's ParseException...). */
export class HintError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HintError';
  }
}

// ---------------------------------------------------------------------------------------------
// Python string helpers

// str.isspace() / the \s of Python's re on str: ASCII whitespace, \x1c-\x1f, \x85 and Unicode spaces.
const PY_SPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;
const isPySpace = (ch: string) => PY_SPACE.test(ch);

/** Python's str.strip() without arguments. */
export function pyStrip(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && isPySpace(s[a]!)) a++;
  while (b > a && isPySpace(s[b - 1]!)) b--;
  return s.slice(a, b);
}

/** Python's str() of a JSON value. */
export function pyStr(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number') return String(v);
  return JSON.stringify(v);
}

/** Python's urllib.parse.quote(): everything but letters, digits, "_.-~" and "/" is %XX-encoded. */
export function pyQuote(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9_.\-~/]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

// Python's float(): optional sign, digits with single underscores between them, a fraction, an
// exponent, or inf/infinity/nan. Anything else (hex, "", "1e", "%2B5") raises ValueError.
const PY_DIGITS = '\\d(?:_?\\d)*';
const PY_FLOAT = new RegExp(`^[+-]?(?:(?:${PY_DIGITS}(?:\\.(?:${PY_DIGITS})?)?|\\.${PY_DIGITS})(?:[eE][+-]?${PY_DIGITS})?|inf|infinity|nan)$`, 'i');

export function pyFloat(v: string | number): number {
  if (typeof v === 'number') return v;
  const s = pyStrip(v);
  if (!PY_FLOAT.test(s)) throw new HintError(`could not convert string to float: '${v}'`);
  const t = s.replace(/_/g, '').toLowerCase();
  if (/^[+-]?nan$/.test(t)) return NaN;
  if (/^[+-]?inf(inity)?$/.test(t)) return t.startsWith('-') ? -Infinity : Infinity;
  return Number(t);
}

/** Python's int() of a (stripped) string, or null where it raises ValueError. */
function pyInt(s: string): number | null {
  const t = pyStrip(s);
  return /^[+-]?\d(?:_?\d)*$/.test(t) ? Number(t.replace(/_/g, '')) : null;
}

const TRUE_STRINGS = new Set(['1', 't', 'true', 'on', 'y', 'yes']);
const FALSE_STRINGS = new Set(['0', 'f', 'false', 'off', 'n', 'no']);

/** oslo strutils.bool_from_string(strict=True), null where it raises. */
export function boolFromString(v: unknown): boolean | null {
  if (typeof v === 'boolean') return v;
  const s = pyStrip(pyStr(v)).toLowerCase();
  return TRUE_STRINGS.has(s) ? true : FALSE_STRINGS.has(s) ? false : null;
}

// ---------------------------------------------------------------------------------------------
// The grammar of oslo.utils specs_matcher.make_grammar(), as pyparsing runs it:
//   expr = disjunction | nary | unary | atom        (first alternative that matches wins)
//   unary_ops = "==" | "=" | "!=" | "<in>" | ">=" | "<=" | ">" | "<" | "s==" | "s!=" | "s<=" | "s<" | "s>=" | "s>"
//   atom = ~(unary_ops | "<all-in>" | "<or>") + Regex(\S+)
// Tokens need no whitespace between them ("==5", "<in>foo", "<or>a<or>b" = ["<or>", "a<or>b"]),
// pyparsing skips " \t\n\r" before each token, and text after the first parse is ignored.

const UNARY_OPS = ['==', '=', '!=', '<in>', '>=', '<=', '>', '<', 's==', 's!=', 's<=', 's<', 's>=', 's>'];
const KEYWORDS = [...UNARY_OPS, '<all-in>', '<or>'];

function skipWs(s: string, i: number): number {
  while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === '\n' || s[i] === '\r')) i++;
  return i;
}

function literalAt(s: string, i: number, lit: string): number {
  const j = skipWs(s, i);
  return s.startsWith(lit, j) ? j + lit.length : -1;
}

function atomAt(s: string, i: number): [string, number] | null {
  const j = skipWs(s, i);
  if (KEYWORDS.some((k) => s.startsWith(k, j))) return null;
  let k = j;
  while (k < s.length && !isPySpace(s[k]!)) k++;
  return k > j ? [s.slice(j, k), k] : null;
}

/** pyparsing parseString(): the tokens, or null where it raises ParseException. */
export function parseSpec(spec: string): string[] | null {
  // disjunction: OneOrMore("<or>" + atom), the "<or>"s dropped
  const alternatives: string[] = [];
  for (let i = 0; ; ) {
    const j = literalAt(spec, i, '<or>');
    const a = j < 0 ? null : atomAt(spec, j);
    if (!a) break;
    alternatives.push(a[0]);
    i = a[1];
  }
  if (alternatives.length) return ['<or>', ...alternatives];
  // nary: "<all-in>" + OneOrMore(atom)
  const allIn = literalAt(spec, 0, '<all-in>');
  if (allIn >= 0) {
    const items: string[] = [];
    for (let a = atomAt(spec, allIn); a; a = atomAt(spec, a[1])) items.push(a[0]);
    if (items.length) return ['<all-in>', ...items];
  }
  // unary: the first operator literal that matches, then an atom (no backtracking to a shorter operator)
  for (const op of UNARY_OPS) {
    const j = literalAt(spec, 0, op);
    if (j < 0) continue;
    const a = atomAt(spec, j);
    if (a) return [op, a[0]];
    break;
  }
  const a = atomAt(spec, 0);
  return a ? [a[0]] : null;
}

/** specs_matcher.match's view of a spec: its tokens, or the whole spec when it does not parse. */
export function parseExpression(spec: string): string[] {
  return parseSpec(spec) ?? [spec];
}

// ---------------------------------------------------------------------------------------------
// ironic-lib's expression normalisation

class EmptyExpressionError extends HintError {}

/** ironic-lib _extract_hint_operator_and_values. */
export function extractOperatorAndValues(expression: unknown, hint: string): { op: string; values: string[] } {
  const expr = pyStrip(pyStr(expression)).toLowerCase();
  if (!expr) throw new EmptyExpressionError(`Root device hint "${hint}" expression is empty`);
  const ast = parseSpec(expr);
  if (ast === null) {
    throw new HintError(
      `Root device hint "${hint}" expression ${JSON.stringify(expr)} cannot be parsed: an operator must be followed by a value that is not an operator`,
    );
  }
  if (ast.length <= 1) return { op: '', values: [expr] };
  const op = ast[0]!;
  // re.split(op, expression): every occurrence of the operator separates values, even inside one.
  return { op, values: expr.split(op).filter((v) => v !== '').map(pyStrip) };
}

/** ironic-lib _normalize_hint_expression: lowercased, values URL-quoted, the operator kept. */
export function normaliseExpression(expression: unknown, hint: string): string {
  const { op, values } = extractOperatorAndValues(expression, hint);
  return pyStrip(op + values.map((t) => ` ${pyQuote(t)} `).join(op));
}

// ---------------------------------------------------------------------------------------------
// oslo.utils specs_matcher.match

function typeName(v: string | number): string {
  return typeof v === 'number' ? 'float' : 'str';
}

/**
 * oslo.utils specs_matcher.match(value, spec). `value` is a string (a normalised attribute) or a
 * number (the size in GiB, a Python float). Throws HintError where Python raises.
 */
export function specMatches(value: string | number, spec: string): boolean {
  const tree = parseExpression(spec);
  if (tree.length === 1) return tree[0] === value;
  const [op, ...args] = tree as [string, ...string[]];
  const a = args[0]!;
  const strCmp = (cmp: (x: string, y: string) => boolean): boolean => {
    if (typeof value !== 'string') throw new HintError(`'${op.slice(1)}' not supported between instances of '${typeName(value)}' and 'str'`);
    return cmp(value, a);
  };
  switch (op) {
    case '=':
    case '>=':
      return pyFloat(value) >= pyFloat(a);
    case '==':
      return pyFloat(value) === pyFloat(a);
    case '!=':
      return pyFloat(value) !== pyFloat(a);
    case '<=':
      return pyFloat(value) <= pyFloat(a);
    case '<':
      return pyFloat(value) < pyFloat(a);
    case '>':
      return pyFloat(value) > pyFloat(a);
    // A float never equals a str in Python; ordering them raises TypeError.
    case 's==':
      return value === a;
    case 's!=':
      return value !== a;
    case 's<':
      return strCmp((x, y) => x < y);
    case 's<=':
      return strCmp((x, y) => x <= y);
    case 's>':
      return strCmp((x, y) => x > y);
    case 's>=':
      return strCmp((x, y) => x >= y);
    case '<in>':
      if (typeof value !== 'string') throw new HintError(`argument of type '${typeName(value)}' is not iterable`);
      return value.includes(a);
    case '<or>':
      return args.includes(value as string);
    case '<all-in>':
      // oslo runs ast.literal_eval() on the value and wants a list; a normalised attribute (its
      // brackets are URL-quoted) or a size never is one, so ironic-lib always raises here.
      throw new HintError('the <all-in> operator needs the device attribute to be a Python list literal, which it never is for a root device hint');
    default:
      throw new HintError(`unknown operator ${op}`);
  }
}

// ---------------------------------------------------------------------------------------------
// ironic-lib parse_root_device_hints / find_devices_by_hints

function rangeInNote(expression: unknown): string {
  return typeof expression === 'string' && expression.toLowerCase().includes('<range-in>')
    ? ' (ironic-lib does not support the <range-in> operator in root device hints; it reads it as "<")'
    : '';
}

/** ironic-lib parse_root_device_hints: validates and normalises; null when there are no hints. Throws HintError. */
function parseHints(raw: Record<string, unknown>): ParsedHints | null {
  if (Object.keys(raw).length === 0) return null;
  const invalid = Object.keys(raw).filter((k) => !Object.hasOwn(HINT_TYPES, k));
  if (invalid.length) {
    throw new HintError(`The hints "${invalid.join(', ')}" are invalid. Valid hints are: "${Object.keys(HINT_TYPES).join(', ')}"`);
  }
  const out: ParsedHints = {};
  for (const [name, expression] of Object.entries(raw) as [HintName, unknown][]) {
    const type = HINT_TYPES[name];
    if (type === 'str') {
      if (typeof expression !== 'string') {
        throw new HintError(`Root device hint "${name}" is not a string value. Hint expression: ${pyStr(expression)}`);
      }
      let expr = expression;
      // Ferrum: "sda" names /dev/sda, as operators write it by hand (ironic-lib never matches it).
      if (name === 'name') {
        const bare = pyStrip(expr);
        if (parseSpec(bare.toLowerCase())?.length === 1 && !bare.toLowerCase().startsWith('/dev/')) expr = `/dev/${bare}`;
      }
      out[name] = normaliseExpression(expr, name);
    } else if (type === 'int') {
      for (const v of extractOperatorAndValues(expression, name).values) {
        const n = pyInt(v);
        if (n === null) throw new HintError(`Root device hint "${name}" is not an integer value. Current value: ${pyStr(expression)}${rangeInNote(expression)}`);
        if (n <= 0) throw new HintError(`Root device hint "${name}" should be a positive integer. Current value: ${pyStr(expression)}`);
      }
      // Kept as given (not lowercased) for _append_operator_to_hints below, as ironic-lib does.
      out[name] = pyStr(expression);
    } else {
      const b = boolFromString(expression);
      if (b === null) throw new HintError(`Root device hint "${name}" is not a Boolean value. Current value: ${pyStr(expression)}`);
      out[name] = b;
    }
  }
  // _append_operator_to_hints: a value without an operator means equality.
  for (const name of Object.keys(out) as HintName[]) {
    const type = HINT_TYPES[name];
    if (type === 'bool') continue;
    const expression = out[name] as string;
    const ast = parseSpec(expression);
    if (ast === null) throw new HintError(`Root device hint "${name}" expression ${JSON.stringify(expression)} cannot be parsed`);
    if (ast.length > 1) continue;
    out[name] = `${type === 'str' ? 's==' : '=='} ${expression}`;
  }
  return out;
}

/** Validates and normalises hints (ironic-lib parse_root_device_hints); throws DeviceNotFound with ironic-lib's message. */
export function parseRootDeviceHints(raw: Record<string, unknown> | null | undefined): ParsedHints | null {
  if (!raw) return null;
  try {
    return parseHints(raw);
  } catch (err) {
    if (err instanceof HintError) throw errors.deviceNotFound(err.message);
    throw err;
  }
}

export interface HintDevice {
  name: string;
  size: number;
  rotational: boolean;
  model?: string | null;
  vendor?: string | null;
  serial?: string | null;
  wwn?: string | null;
  wwn_with_extension?: string | null;
  wwn_vendor_extension?: string | null;
  hctl?: string | null;
  by_path?: string | null;
  tran?: string | null;
}

/**
 * Does one device satisfy every parsed hint? Hints are tried in order and the first that fails
 * decides, so an expression that cannot be evaluated only raises when it is reached (as ironic-lib).
 * A missing attribute is Python's None, which ironic-lib compares as the string "none"; an empty
 * one never matches.
 */
export function deviceMatches(dev: HintDevice, hints: ParsedHints): boolean {
  for (const [name, hint] of Object.entries(hints) as [HintName, string | boolean][]) {
    const type = HINT_TYPES[name];
    let value = (dev as unknown as Record<string, unknown>)[name];
    if (type === 'str') {
      try {
        value = normaliseExpression(value, name);
      } catch (err) {
        if (err instanceof EmptyExpressionError) return false;
        throw new HintError(`the ${name} of device ${dev.name} (${JSON.stringify(value)}) cannot be compared: ${(err as Error).message}`);
      }
    }
    if (name === 'size') {
      if (typeof value !== 'number') throw new HintError(`device ${dev.name} has no size`);
      value = value / 2 ** 30;
    }
    if (type === 'bool') {
      if (boolFromString(value) !== hint) return false;
      continue;
    }
    try {
      if (!specMatches(value as string | number, hint as string)) return false;
    } catch (err) {
      if (!(err instanceof HintError)) throw err;
      throw new HintError(`root device hint "${name}" (${JSON.stringify(hint)}) cannot be evaluated against device ${dev.name}: ${err.message}`);
    }
  }
  return true;
}

/**
 * All devices matching the hints, in inventory order (ironic-lib find_devices_by_hints). Invalid
 * hints, and hints ironic-lib cannot evaluate, raise DeviceNotFound with IPA's message.
 */
export function findDevicesByHints<D extends HintDevice>(devices: D[], raw: Record<string, unknown>): D[] {
  try {
    const hints = parseHints(raw);
    if (!hints) return [...devices]; // (ironic-lib would fail on {}; callers treat no hints as "no filter")
    return devices.filter((d) => deviceMatches(d, hints));
  } catch (err) {
    if (!(err instanceof HintError)) throw err;
    throw errors.deviceNotFound(
      `No devices could be found using the root device hints ${JSON.stringify(raw)} because they failed to validate. Error: ${err.message}${err.message.includes('<range-in> operator') ? '' : rangeInNote(JSON.stringify(raw))}`,
    );
  }
}
