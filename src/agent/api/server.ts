// The command API (fastify), answering exactly as IPA's: discovery documents, status, the command
// history and POST /v1/commands/. Every error is a {faultcode, faultstring} body with a 4xx/5xx code.
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import secureJson from 'secure-json-parse';
import type { Socket } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isWaitTrue } from '../../protocol/commands.js';
import { rootDocument, v1Document, type AgentStatus } from '../../protocol/api-root.js';
import type { FaultBody } from '../../protocol/errors.js';
import { AgentError, errors } from '../errors.js';
import type { Executor } from '../executor.js';
import type { AgentState } from '../state.js';
import type { Logger } from '../log.js';
import { lingerOnClose } from './lingering-close.js';

export interface ApiDeps {
  executor: Executor;
  state: AgentState;
  log: Logger;
  status(): AgentStatus;
}

export interface TlsMaterial {
  key: string;
  cert: string;
}

/** Largest accepted request body: an inline configdrive (64 MiB ISO, gzipped, base64) must fit. */
export const BODY_LIMIT = 128 * 1024 * 1024;

/**
 * Deepest JSON nesting accepted in a request. Conductors nest a dozen levels at most; much deeper
 * input parses fine but cannot be serialised back (JSON.stringify recurses), so a step echoing it
 * would make every later GET /v1/commands/ fail with 500.
 */
export const MAX_JSON_DEPTH = 200;

const HTTP_REASONS: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Request Entity Too Large',
  414: 'Request-URI Too Long',
  415: 'Unsupported Media Type',
  417: 'Expectation Failed',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
};

function fault(code: number, text: string): FaultBody {
  return { faultcode: code >= 500 ? 'Server' : 'Client', faultstring: `${code} ${HTTP_REASONS[code] ?? 'Error'}: ${text}` };
}

/** A complete fault response for places that only have the raw socket; without body for HEAD. */
function rawFault(code: number, text: string, extraHeaders = '', head = false): string {
  const body = JSON.stringify(fault(code, text));
  return (
    `HTTP/1.1 ${code} ${HTTP_REASONS[code]}\r\nContent-Type: application/json\r\n${extraHeaders}` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${head ? '' : body}`
  );
}

class HttpFault extends Error {
  constructor(
    readonly statusCode: number,
    readonly text: string,
  ) {
    super(text);
  }
}

const NOT_FOUND_TEXT =
  'The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.';

const DOC_PATHS = ['/', '/v1', '/v1/', '/v1/status', '/status'];
const LIST_PATHS = ['/v1/commands', '/v1/commands/', '/commands', '/commands/'];

/** The methods a known URL answers (werkzeug answers 405 for any other method on it), or null. */
function allowedMethods(url: string): string | null {
  const path = url.split('?', 1)[0] ?? '';
  if (DOC_PATHS.includes(path)) return 'GET, HEAD';
  if (LIST_PATHS.includes(path)) return 'GET, HEAD, POST';
  if (/^\/(v1\/)?commands\/[^/]+$/.test(path)) return 'GET, HEAD';
  return null;
}

function stringQuery(req: FastifyRequest, key: string): string | undefined {
  const v = (req.query as Record<string, unknown> | undefined)?.[key];
  if (Array.isArray(v)) return typeof v[0] === 'string' ? v[0] : undefined;
  return typeof v === 'string' ? v : undefined;
}

function rootUrl(req: FastifyRequest): string {
  const host = req.headers.host;
  const safeHost = host && /^[A-Za-z0-9.:[\]-]{1,255}$/.test(host) ? host : 'localhost';
  return `${req.protocol}://${safeHost}`;
}

export function buildApi(deps: ApiDeps, tls: TlsMaterial | null): FastifyInstance {
  const { executor, state, log } = deps;
  const app = Fastify({
    ...(tls ? { https: { key: tls.key, cert: tls.cert, requireHostHeader: false } } : {}),
    bodyLimit: BODY_LIMIT,
    logger: false,
    // Any id fits (node caps the request line anyway): an unknown long id is a 404 "Command with
    // id … not found", as IPA answers, not a framework 414.
    routerOptions: { maxParamLength: 64 * 1024, caseSensitive: true },
    return503OnClosing: true,
    // Bad percent-encoding in the URL (and the other errors raised before routing) get a fault body too.
    frameworkErrors(err: Error & { statusCode?: number }, _req: FastifyRequest, reply: FastifyReply) {
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400;
      void reply.code(status).send(fault(status, 'The browser (or proxy) sent a request that this server could not understand.'));
    },
    // Malformed HTTP never reaches a route; still answer with a fault body, as for every other error.
    clientErrorHandler(err: NodeJS.ErrnoException & { code?: string }, socket: Socket) {
      if (!socket.writable) return;
      const code = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'HPE_URI_TOO_LONG' ? 414 : 400;
      // An answer to HEAD has no body, even when the request broke after its method.
      const head = (err as { rawPacket?: Buffer }).rawPacket?.subarray(0, 5).toString('latin1') === 'HEAD ';
      socket.end(rawFault(code, 'The request could not be parsed.', '', head));
    },
    // node answers an HTTP/1.1 request without Host with an empty 400; IPA's server serves it
    // (also set for https above).
    http: { requireHostHeader: false },
  });

  // Requests node would otherwise answer with an empty body, or drop without an answer.
  app.server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
    const body = JSON.stringify(fault(417, 'Only "Expect: 100-continue" is supported.'));
    res.writeHead(417, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' });
    res.end(body);
  });
  app.server.on('connect', (_req: IncomingMessage, socket: Socket) => {
    socket.on('error', () => undefined);
    socket.end(rawFault(405, 'The method is not allowed for the requested URL.', 'Allow: GET, HEAD, POST\r\n'));
  });

  // Like IPA (get_json(force=True)), any content type is read as JSON; we parse it ourselves so
  // that a bad body gets IPA's error and never a framework default.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit: BODY_LIMIT }, (_req, body, done) => done(null, body));
  // A malformed Content-Type (e.g. ";;;") would otherwise be a framework 415 before our parser runs.
  app.addHook('onRequest', (req, reply, done) => {
    // Only origin-form ("/v1/…") and absolute-form targets name a resource; the router would
    // otherwise take e.g. "*" for "/".
    if (!req.url.startsWith('/') && !/^https?:\/\//i.test(req.url)) {
      void reply.code(404).send(fault(404, NOT_FOUND_TEXT));
      return;
    }
    if (req.headers['content-type'] !== undefined) req.headers['content-type'] = 'application/json';
    done();
  });

  app.setErrorHandler((err: Error & { statusCode?: number }, req, reply) => {
    // Answered before its body has all arrived (a body over the limit): close without a RST.
    if (!req.raw.complete) lingerOnClose(req.raw.socket);
    if (err instanceof AgentError) {
      if (err.code >= 500) log.error({ err }, 'request failed');
      return reply.code(err.code).send(err.toFault());
    }
    if (err instanceof HttpFault) return reply.code(err.statusCode).send(fault(err.statusCode, err.text));
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
    if (status >= 500) log.error({ err, url: req.url }, 'internal error in API');
    return reply.code(status).send(fault(status, status >= 500 ? 'Internal error' : err.message));
  });
  app.setNotFoundHandler((req, reply) => {
    // Methods without a route of their own (TRACE, PROPFIND, …) on a known URL: 405, as werkzeug.
    const allow = allowedMethods(req.url);
    if (allow && !allow.split(', ').includes(req.method)) {
      return reply.code(405).header('allow', allow).send(fault(405, 'The method is not allowed for the requested URL.'));
    }
    return reply.code(404).send(fault(404, NOT_FOUND_TEXT));
  });

  const get = (paths: string[], handler: (req: FastifyRequest, reply: FastifyReply) => unknown) =>
    paths.forEach((url) => app.get(url, handler));
  const methodNotAllowed = (paths: string[], allowed: string) =>
    paths.forEach((url) =>
      app.route({
        method: ['PUT', 'DELETE', 'PATCH', 'OPTIONS', ...(allowed === 'GET' ? ['POST'] : [])],
        url,
        handler: (_req, reply) => reply.code(405).header('allow', allowed === 'GET' ? 'GET, HEAD' : allowed).send(
          fault(405, 'The method is not allowed for the requested URL.'),
        ),
      }),
    );

  get(['/'], (req) => rootDocument(rootUrl(req)));
  get(['/v1', '/v1/'], (req) => v1Document(rootUrl(req)));
  get(['/v1/status', '/status'], () => deps.status());
  methodNotAllowed(DOC_PATHS, 'GET');

  const listPaths = LIST_PATHS;
  get(listPaths, (req) => {
    if (!state.authorizeRead(stringQuery(req, 'agent_token'))) throw new HttpFault(401, 'Token invalid.');
    return { commands: executor.list() };
  });
  for (const url of listPaths) app.post(url, (req) => runCommand(req));
  methodNotAllowed(listPaths, 'GET, HEAD, POST');

  const itemPaths = ['/v1/commands/:id', '/commands/:id'];
  get(itemPaths, async (req) => {
    if (!state.authorizeRead(stringQuery(req, 'agent_token'))) throw new HttpFault(401, 'Token invalid.');
    const id = (req.params as { id: string }).id;
    const record = executor.get(id);
    if (!record) throw errors.notFound('Command', id);
    if (isWaitTrue(stringQuery(req, 'wait'))) await record.done;
    return record.toWire();
  });
  methodNotAllowed(itemPaths, 'GET');

  async function runCommand(req: FastifyRequest) {
    const body = parseBody(req.body);
    if (
      body === null ||
      typeof body !== 'object' ||
      Array.isArray(body) ||
      typeof (body as Record<string, unknown>)['name'] !== 'string' ||
      !isPlainObject((body as Record<string, unknown>)['params'])
    ) {
      throw new HttpFault(400, 'Missing or invalid name or params');
    }
    const { name, params, agent_token: bodyToken } = body as { name: string; params: Record<string, unknown>; agent_token?: unknown };
    const token = stringQuery(req, 'agent_token') ?? (typeof bodyToken === 'string' ? bodyToken : undefined);
    const readOnly = executor.definition(name)?.readOnly === true;
    if (!state.authorizeCommand(token, readOnly)) {
      log.warn({ command: name, remote: req.ip, token_given: token !== undefined }, 'command refused: invalid or missing agent token');
      throw new HttpFault(401, 'Token invalid.');
    }
    const record = await executor.execute(name, params, { wait: isWaitTrue(stringQuery(req, 'wait')) });
    return record.toWire();
  }

  return app;
}

function parseBody(raw: unknown): unknown {
  if (typeof raw !== 'string' || raw.trim() === '') throw new HttpFault(400, 'Failed to decode JSON object: empty body');
  if (nestedDeeperThan(raw, MAX_JSON_DEPTH)) {
    throw new HttpFault(400, `Failed to decode JSON object: nested deeper than ${MAX_JSON_DEPTH} levels`);
  }
  try {
    return secureJson.parse(raw, undefined, { protoAction: 'error', constructorAction: 'error' });
  } catch (err) {
    throw new HttpFault(400, `Failed to decode JSON object: ${(err as Error).message}`);
  }
}

/** True when brackets/braces outside strings nest deeper than `limit` (one linear scan). */
function nestedDeeperThan(text: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > limit) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
