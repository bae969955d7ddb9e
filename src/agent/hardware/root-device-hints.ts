// Root-device hints with the semantics of ironic-lib and oslo.utils' specs matcher: expressions
// are lowercased and URL-quoted on both sides, a missing operator means s== (strings) or ==
// (size, in GiB), "=" means >=, rotational is compared as a boolean, and every hint must match.
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

// Longest first, so that "==" is not read as "=" and "s<=" not as "s<".
const UNARY = ['==', '=', '!=', '<in>', '>=', '<=', '>', '<', 's==', 's!=', 's<=', 's<', 's>=', 's>'];
const KEYWORDS = new Set([...UNARY, '<all-in>', '<or>', '<range-in>']);

/** The parse of an expression: [op, ...operands], or [atom] when it has no operator. */
export function parseExpression(spec: string): string[] {
  const words = spec.trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return [spec];
  const first = words[0]!;
  const atoms = (ws: string[]) => ws.every((w) => !KEYWORDS.has(w));
  if (first === '<or>') {
    const values: string[] = [];
    for (let i = 0; i + 1 < words.length && words[i] === '<or>' && !KEYWORDS.has(words[i + 1]!); i += 2) values.push(words[i + 1]!);
    return values.length ? ['<or>', ...values] : [spec];
  }
  if (first === '<all-in>') {
    const rest: string[] = [];
    for (const w of words.slice(1)) {
      if (KEYWORDS.has(w)) break;
      rest.push(w);
    }
    return rest.length ? ['<all-in>', ...rest] : [spec];
  }
  if (first === '<range-in>') {
    const rest = words.slice(1, 5);
    return rest.length === 4 && atoms(rest) ? ['<range-in>', ...rest] : [spec];
  }
  // A unary operator may be glued to its operand in oslo's grammar only with whitespace; we match that.
  if (UNARY.includes(first) && words.length >= 2 && !KEYWORDS.has(words[1]!)) return [first, words[1]!];
  if (KEYWORDS.has(first)) return [spec];
  return [spec];
}

function num(v: string | number): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (Number.isNaN(n)) throw new Error(`"${v}" is not a number`);
  return n;
}

/** oslo.utils specs_matcher.match */
export function specMatches(value: string | number, spec: string): boolean {
  const tree = parseExpression(spec);
  if (tree.length === 1) return tree[0] === String(value);
  const [op, ...args] = tree as [string, ...string[]];
  const a = args[0]!;
  const s = String(value);
  switch (op) {
    case '=':
    case '>=':
      return num(value) >= num(a);
    case '==':
      return num(value) === num(a);
    case '!=':
      return num(value) !== num(a);
    case '<=':
      return num(value) <= num(a);
    case '<':
      return num(value) < num(a);
    case '>':
      return num(value) > num(a);
    case 's==':
      return s === a;
    case 's!=':
      return s !== a;
    case 's<':
      return s < a;
    case 's<=':
      return s <= a;
    case 's>':
      return s > a;
    case 's>=':
      return s >= a;
    case '<in>':
      return s.includes(a);
    case '<or>':
      return args.includes(s);
    case '<all-in>':
      return args.every((x) => s.includes(x));
    case '<range-in>': {
      const [lo, low, high, hi] = args as [string, string, string, string];
      const x = num(value);
      const l = num(low);
      const h = num(high);
      if (l > h) throw new Error('<range-in>: the first bound must not exceed the second');
      if ((lo !== '[' && lo !== '(') || (hi !== ']' && hi !== ')')) throw new Error('<range-in> needs [ or ( and ] or )');
      return (lo === '[' ? x >= l : x > l) && (hi === ']' ? x <= h : x < h);
    }
    default:
      return false;
  }
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

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Lowercases and URL-quotes the values of an expression, keeping its operator (ironic-lib). */
export function normaliseExpression(expression: string, hint: string): string {
  const expr = expression.trim().toLowerCase();
  if (!expr) throw new Error(`Root device hint "${hint}" expression is empty`);
  const tree = parseExpression(expr);
  if (tree.length <= 1) return pyQuote(expr);
  const op = tree[0]!;
  const values = expr.split(new RegExp(escapeRegExp(op))).map((v) => v.trim()).filter(Boolean);
  return (op + values.map((v) => ` ${pyQuote(v)} `).join(op)).trim();
}

const TRUE = new Set(['1', 't', 'true', 'on', 'y', 'yes']);
const FALSE = new Set(['0', 'f', 'false', 'off', 'n', 'no']);

function strictBool(v: unknown): boolean | null {
  if (typeof v === 'boolean') return v;
  const s = String(v).trim().toLowerCase();
  return TRUE.has(s) ? true : FALSE.has(s) ? false : null;
}

/** Validates and normalises hints; throws InvalidCommandParamsError-like errors as clear text. */
export function parseRootDeviceHints(raw: Record<string, unknown> | null | undefined): ParsedHints | null {
  if (!raw || Object.keys(raw).length === 0) return null;
  const invalid = Object.keys(raw).filter((k) => !(k in HINT_TYPES));
  if (invalid.length) {
    throw errors.deviceNotFound(`The hints "${invalid.join(', ')}" are invalid. Valid hints are: "${Object.keys(HINT_TYPES).join(', ')}"`);
  }
  const out: ParsedHints = {};
  for (const [name, expression] of Object.entries(raw) as [HintName, unknown][]) {
    const type = HINT_TYPES[name];
    if (type === 'str') {
      if (typeof expression !== 'string') throw errors.deviceNotFound(`Root device hint "${name}" is not a string value. Hint expression: ${JSON.stringify(expression)}`);
      let expr = expression;
      // "sda" names /dev/sda, as operators write it by hand.
      if (name === 'name' && parseExpression(expr.trim()).length === 1 && !expr.trim().startsWith('/dev/')) expr = `/dev/${expr.trim()}`;
      const norm = normaliseExpression(expr, name);
      out[name] = parseExpression(norm).length > 1 ? norm : `s== ${norm}`;
    } else if (type === 'int') {
      const expr = String(expression).trim().toLowerCase();
      const tree = parseExpression(expr);
      const values = tree.length > 1 ? tree.slice(1).filter((v) => !['[', '(', ']', ')'].includes(v)) : [expr];
      for (const v of values) {
        if (!/^[+-]?\d+$/.test(v)) throw errors.deviceNotFound(`Root device hint "${name}" is not an integer value. Current value: ${expression}`);
        if (Number(v) <= 0) throw errors.deviceNotFound(`Root device hint "${name}" should be a positive integer. Current value: ${expression}`);
      }
      out[name] = tree.length > 1 ? expr : `== ${expr}`;
    } else {
      const b = strictBool(expression);
      if (b === null) throw errors.deviceNotFound(`Root device hint "${name}" is not a Boolean value. Current value: ${expression}`);
      out[name] = b;
    }
  }
  return out;
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

/** Does one device satisfy every parsed hint? */
export function deviceMatches(dev: HintDevice, hints: ParsedHints): boolean {
  for (const [name, hint] of Object.entries(hints) as [HintName, string | boolean][]) {
    const type = HINT_TYPES[name];
    const value = (dev as unknown as Record<string, unknown>)[name];
    if (type === 'bool') {
      if (strictBool(value) !== hint) return false;
      continue;
    }
    if (type === 'int') {
      if (typeof value !== 'number' || !specMatches(value / 2 ** 30, hint as string)) return false;
      continue;
    }
    if (value === null || value === undefined || String(value).trim() === '') return false; // an empty attribute never matches
    if (!specMatches(normaliseExpression(String(value), name), hint as string)) return false;
  }
  return true;
}

/** All devices matching the hints, in inventory order. */
export function findDevicesByHints<D extends HintDevice>(devices: D[], raw: Record<string, unknown>): D[] {
  const hints = parseRootDeviceHints(raw);
  if (!hints) return [...devices];
  return devices.filter((d) => deviceMatches(d, hints));
}
