import { Ajv2020 } from 'ajv/dist/2020.js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId } from '../src/ids.ts';
import { STORE_KINDS } from './support/databases.ts';
import { ADMIN_KEY, startTestServer, type TestServer } from './support/test-server.ts';

type Schema = {
  $ref?: string;
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  anyOf?: Schema[];
  oneOf?: Schema[];
  enum?: unknown[];
  const?: unknown;
  minimum?: number;
  minItems?: number;
  additionalProperties?: unknown;
};
type Operation = {
  parameters?: { name: string; in: string }[];
  requestBody?: { content?: Record<string, { schema?: Schema }> };
};
type OpenApiDocument = { paths: Record<string, Record<string, Operation>> };

/** Wrong values tried in place of every property of a body. */
const WRONG_VALUES: unknown[] = [
  null,
  -1,
  1.5,
  // Past a 32-bit and a 64-bit integer column, and past what a double holds exactly.
  2 ** 31,
  2 ** 63,
  1e300,
  '',
  'x'.repeat(10_000),
  true,
  [],
  {},
  '\u0000',
];
/** Bodies that are not the object an operation takes. */
const RAW_BODIES = [
  '',
  'null',
  '[]',
  '"text"',
  '{',
  '{"a":1}{',
  // Nested deeper than a recursive walk's stack: 10,000 arrays, and 10,000 objects under a field.
  '['.repeat(10_000) + ']'.repeat(10_000),
  '{"metadata":' + '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_001),
];
/** Path ids that are malformed, or well-formed and unknown to every kind of resource. */
const WRONG_IDS = [
  'x',
  '%00',
  'a'.repeat(3_000),
  "'%3B%20select%201--",
  '00000000-0000-0000-0000-000000000000',
];

/**
 * Bad input gets a 4xx with a stable code, never a 5xx (DESIGN §4), on every operation `/openapi.json`
 * describes: each is sent wrong path ids, every property of its body with a wrong value, an unknown field in
 * every object of its body, bodies that are not objects, and cursors and content types that do not parse.
 * Generated from the document, so a route is covered as soon as it is described.
 */
describe.each(STORE_KINDS)('every described operation under mutated input on %s', (kind) => {
  let server: TestServer;
  let document: OpenApiDocument;
  const ids: Record<string, string> = {};
  let memberKey: string;
  let ajv: Ajv2020;

  beforeAll(async () => {
    server = await startTestServer(kind, {
      logger: pino({ level: 'silent' }),
      config: { rateLimitPerMinute: 1_000_000, allowPrivateUrls: true },
    });
    document = (await (await fetch(`${server.url}/openapi.json`)).json()) as OpenApiDocument;
    ajv = new Ajv2020({ strict: false, allErrors: true });
    ajv.addSchema(document, 'openapi');
    const created = async (path: string, body: unknown) => {
      const response = await server.api(path, { method: 'POST', body });
      expect(response.status, `${path}: ${JSON.stringify(response.body)}`).toBe(201);
      return Object.values(response.body).find((value) => value?.id)!.id as string;
    };
    ids.workspaceId = await created('/v1/admin/workspaces', { name: 'fuzzed' });
    const user = await server.api('/v1/admin/users', {
      method: 'POST',
      body: { workspaceId: ids.workspaceId, email: 'member@example.com' },
    });
    ids.userId = user.body.user.id;
    memberKey = user.body.apiKey;
    ids.chatId = await server.createChat();
    ids.runId = (await server.startRun(ids.chatId, { steps: 1, tokens: 2 })).id;
    await server.waitForRun(ids.runId);
    ids.agentId = await created('/v1/agents', {
      name: 'careful',
      tools: [{ name: 'echo', needsApproval: true }],
    });
    ids.scheduleId = await created(`/v1/chats/${ids.chatId}/schedules`, {
      cron: '0 9 * * *',
      input: { text: 'hi' },
    });
    ids.webhookId = await created('/v1/webhooks', { url: 'http://127.0.0.1:9/hook' });
    // A finished delivery of it, for the retry route: no run of this workspace has ended since it was made.
    ids.deliveryId = newId('delivery');
    await server.outrun.db
      .insertInto('webhook_deliveries')
      .values({
        id: ids.deliveryId,
        webhook_id: ids.webhookId,
        workspace_id: (await server.api('/v1/me')).body.workspace.id,
        run_id: ids.runId,
        event: 'run.succeeded',
        payload: JSON.stringify({ type: 'run.succeeded' }),
        status: 'failed',
      })
      .execute();
    ids.keyId = await created('/v1/api-keys', { name: 'fuzzed' });
  });
  afterAll(async () => {
    await server?.close();
  });

  /** A request that gives up on a stream after a moment: only its status and a JSON error matter. */
  async function send(
    method: string,
    path: string,
    init: { body?: string; headers?: Record<string, string> },
  ) {
    const response = await fetch(`${server.url}${path}`, {
      method,
      body: init.body,
      headers: { authorization: `Bearer ${ADMIN_KEY}`, ...init.headers },
      signal: AbortSignal.timeout(5_000),
    });
    const contentType = response.headers.get('content-type')?.split(';')[0] ?? null;
    const body = contentType === 'application/json' ? await response.json() : await response.body?.cancel();
    return {
      status: response.status,
      contentType,
      body: body as { error?: { code?: unknown; message?: unknown } },
    };
  }

  /** What is wrong with an answer as the document describes the operation's answers, or null. */
  function undescribed(
    template: string,
    method: string,
    answer: { status: number; contentType: string | null; body: unknown },
  ): string | null {
    const response = (
      document.paths[template]?.[method] as { responses?: Record<string, { content?: object }> } | undefined
    )?.responses?.[String(answer.status)];
    if (!response) return `status ${answer.status} is not described`;
    if (!answer.contentType) return null;
    if (!(answer.contentType in (response.content ?? {}))) return `${answer.contentType} is not described`;
    if (answer.contentType !== 'application/json') return null;
    const pointer = ['paths', template, method, 'responses', String(answer.status)]
      .map((segment) => segment.replaceAll('~', '~0').replaceAll('/', '~1'))
      .join('/');
    const validate = ajv.getSchema(`openapi#/${pointer}/content/application~1json/schema`)!;
    return validate(answer.body) ? null : `body: ${ajv.errorsText(validate.errors).slice(0, 200)}`;
  }

  function resolve(schema: Schema | undefined): Schema | undefined {
    if (!schema?.$ref) return schema;
    const target = schema.$ref
      .replace('#/', '')
      .split('/')
      .reduce<any>((node, key) => node[key], document);
    return resolve(target);
  }

  /** A valid value for the string properties whose names say what they hold. */
  const NAMED_STRINGS: Record<string, () => string> = {
    id: () => ids.chatId!,
    chatId: () => ids.chatId!,
    agentId: () => ids.agentId!,
    workspaceId: () => ids.workspaceId!,
    email: () => 'someone@example.com',
    url: () => 'http://127.0.0.1:9/hook',
    cron: () => '0 9 * * *',
    role: () => 'user',
    type: () => 'text',
  };

  /** Valid bodies the schema alone does not give (useChat's messages hold fields the schema leaves open). */
  const VALID_BODIES: Record<string, () => unknown> = {
    'post /v1/ui/chats': () => ({
      id: ids.chatId,
      messages: [{ id: 'message-1', role: 'user', parts: [{ type: 'text', text: 'hi' }] }],
    }),
  };

  /** A body with the required properties only, each with a plausible value (`name`: the property's). */
  function sample(schema: Schema | undefined, depth = 0, name = ''): unknown {
    const resolved = resolve(schema);
    if (!resolved || depth > 5) return undefined;
    const alternatives = resolved.anyOf ?? resolved.oneOf;
    if (alternatives) return sample(alternatives[0], depth + 1, name);
    if (resolved.properties) {
      return Object.fromEntries(
        (resolved.required ?? []).map((key) => [key, sample(resolved.properties![key], depth + 1, key)]),
      );
    }
    if (resolved.enum) return resolved.enum[0];
    if (resolved.const !== undefined) return resolved.const;
    const type = Array.isArray(resolved.type) ? resolved.type[0] : resolved.type;
    if (type === 'string') return NAMED_STRINGS[name]?.() ?? 'hello';
    if (type === 'integer' || type === 'number') return resolved.minimum ?? 1;
    if (type === 'boolean') return true;
    if (type === 'array') return resolved.minItems ? [sample(resolved.items, depth + 1)] : [];
    return {};
  }

  /**
   * Whether a schema (or one of its alternatives) is an object with known properties that does not declare
   * itself open (`additionalProperties`): such an object must refuse a field it does not know.
   */
  function isClosedObject(schema: Schema | undefined): boolean {
    const resolved = resolve(schema);
    if (resolved?.properties && [undefined, false].includes(resolved.additionalProperties as never))
      return true;
    return (resolved?.anyOf ?? resolved?.oneOf ?? []).some(isClosedObject);
  }

  /** Whether `key` (a property, or `0` for an array's item) can follow in `schema`. */
  function fits(schema: Schema | undefined, key: string): boolean {
    const resolved = resolve(schema);
    if (!resolved) return false;
    if (key === '0' ? resolved.items : resolved.properties?.[key]) return true;
    return (resolved.anyOf ?? resolved.oneOf ?? []).some((alternative) => fits(alternative, key));
  }

  /** The path of every property and array item, and whether it holds a closed object, through alternatives. */
  function properties(schema: Schema | undefined, prefix: string[] = [], depth = 0): [string[], boolean][] {
    const resolved = resolve(schema);
    if (!resolved || depth > 5) return [];
    const found = (resolved.anyOf ?? resolved.oneOf ?? []).flatMap((alternative) =>
      properties(alternative, prefix, depth + 1),
    );
    const children: [string, Schema][] = Object.entries(resolved.properties ?? {});
    if (resolved.items) children.push(['0', resolved.items]);
    for (const [name, child] of children) {
      const path = [...prefix, name];
      found.push([path, isClosedObject(child)], ...properties(child, path, depth + 1));
    }
    const seen = new Set<string>();
    return found.filter(([path]) => !seen.has(path.join('.')) && Boolean(seen.add(path.join('.'))));
  }

  /** A body with the required properties, that also holds `path`: the alternatives and items along it. */
  function sampleAlong(schema: Schema | undefined, path: string[], name = ''): unknown {
    const resolved = resolve(schema);
    if (!resolved) return undefined;
    const alternatives = resolved.anyOf ?? resolved.oneOf;
    if (alternatives) {
      const next = path[0];
      const fitting =
        next === undefined ? alternatives[0] : alternatives.find((option) => fits(option, next));
      return sampleAlong(fitting ?? alternatives[0], path, name);
    }
    const [next, ...rest] = path;
    if (next === undefined) return sample(resolved, 0, name);
    if (next === '0' && resolved.items) return [sampleAlong(resolved.items, rest)];
    const body = (sample(resolved) ?? {}) as Record<string, unknown>;
    body[next] = sampleAlong(resolved.properties?.[next], rest, next);
    return body;
  }

  /** `body` with `value` at `path` (an existing array is indexed, anything else not an object replaced). */
  function withValue(body: unknown, path: string[], value: unknown): unknown {
    const copy = structuredClone(body ?? {}) as Record<string, any>;
    let node = copy;
    for (const key of path.slice(0, -1)) {
      if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
      node = node[key];
    }
    node[path.at(-1)!] = value;
    return copy;
  }

  /** Every request made of an operation's mutations: what it is, and whether it must be refused. */
  function mutations(template: string, method: string, operation: Operation) {
    const fill = (override: Record<string, string> = {}) =>
      template.replace(/\{(\w+)\}/g, (_, name: string) => override[name] ?? ids[name] ?? 'missing');
    const schema = operation.requestBody?.content?.['application/json']?.schema;
    const good = schema ? (VALID_BODIES[`${method} ${template}`]?.() ?? sample(schema)) : undefined;
    const json = (body: unknown) => ({
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    });
    const requests: {
      label: string;
      path: string;
      init: ReturnType<typeof json> | object;
      refused?: true;
    }[] = [];
    for (const name of template.match(/\{(\w+)\}/g)?.map((param) => param.slice(1, -1)) ?? []) {
      for (const id of WRONG_IDS) {
        requests.push({
          label: `${name}=${id.slice(0, 20)}`,
          path: fill({ [name]: id }),
          init: schema ? json(good) : {},
        });
      }
    }
    // The API's routes (not the operations endpoints) refuse it before acting, so a DELETE's real ids stay.
    if (template.startsWith('/v1/')) {
      requests.push({
        label: '?unknownField',
        path: `${fill()}?unknownField=1`,
        init: schema ? json(good) : {},
        refused: true,
      });
    }
    // A route that takes no body refuses one with a field, before acting, as a route with a body does.
    if (!schema && method !== 'get' && template.startsWith('/v1/')) {
      requests.push({
        label: 'unknown field in no body',
        path: fill(),
        init: json({ unknownField: 1 }),
        refused: true,
      });
    }
    if (method === 'delete') return requests;
    for (const value of ['-1', 'x', '1.5', '2147483648', '9007199254740991']) {
      requests.push({
        label: `Last-Event-ID ${value}`,
        path: fill(),
        init: { headers: { 'last-event-id': value } },
      });
    }
    for (const parameter of operation.parameters?.filter((candidate) => candidate.in === 'query') ?? []) {
      for (const value of ['-1', 'x', '', '2147483648', '9007199254740991', '99999999999999999999']) {
        requests.push({
          label: `?${parameter.name}=${value}`,
          path: `${fill()}?${parameter.name}=${value}`,
          init: {},
        });
      }
    }
    if (!schema) return requests;
    requests.push({
      label: 'text/plain',
      path: fill(),
      init: { body: JSON.stringify(good), headers: { 'content-type': 'text/plain' } },
    });
    for (const raw of RAW_BODIES) {
      requests.push({
        label: `raw ${raw.slice(0, 24)}`,
        path: fill(),
        init: { body: raw, headers: { 'content-type': 'application/json' } },
      });
    }
    requests.push({
      label: 'unknown field',
      path: fill(),
      init: json({ ...(good as object), unknownField: 1 }),
      refused: true,
    });
    for (const [path, closed] of properties(schema)) {
      for (const value of WRONG_VALUES) {
        requests.push({
          label: `${path.join('.')}=${JSON.stringify(value).slice(0, 12)}`,
          path: fill(),
          init: json(withValue(sampleAlong(schema, path), path, value)),
        });
      }
      if (closed) {
        requests.push({
          label: `unknown field in ${path.join('.')}`,
          path: fill(),
          init: json(withValue(sampleAlong(schema, path), [...path, 'unknownField'], 1)),
          refused: true,
        });
      }
    }
    return requests;
  }

  it('answers each with a 4xx and a stable code, or a success, never a 5xx; unknown fields are refused', async () => {
    const problems: string[] = [];
    let sent = 0;
    for (const [template, operations] of Object.entries(document.paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        const requests = mutations(template, method, operation);
        // A few at a time: some run concurrently with others of the same operation, as clients' would.
        for (let index = 0; index < requests.length; index += 4) {
          await Promise.all(
            requests.slice(index, index + 4).map(async (request) => {
              const where = `${method.toUpperCase()} ${template} [${request.label}]`;
              const answer = await send(method.toUpperCase(), request.path, request.init);
              sent += 1;
              if (answer.status >= 500) problems.push(`${where}: ${answer.status}`);
              const mismatch = undescribed(template, method, answer);
              if (mismatch) problems.push(`${where}: ${mismatch}`);
              if (answer.status >= 400 && answer.body && !/^[a-z_]+$/.test(String(answer.body.error?.code))) {
                problems.push(`${where}: ${answer.status} without a code`);
              }
              // Refused for the field itself, not for anything else about the request.
              const refusal = answer.body?.error;
              if (
                request.refused &&
                (refusal?.code !== 'invalid_request' || !String(refusal.message).includes('unknownField'))
              ) {
                problems.push(`${where}: ${answer.status} ${String(answer.body?.error?.code ?? '')}`);
              }
            }),
          );
        }
      }
    }
    expect(problems).toEqual([]);
    expect(sent).toBeGreaterThan(1_000);
    // The server is still whole.
    expect((await server.api('/v1/me')).status).toBe(200);
    const run = await server.startRun(await server.createChat(), { steps: 1, tokens: 1 });
    expect((await server.waitForRun(run.id)).status).toBe('succeeded');
  });

  it('refuses every workspace route to a member of another workspace without a 5xx', async () => {
    const problems: string[] = [];
    for (const [template, operations] of Object.entries(document.paths)) {
      if (!template.startsWith('/v1/')) continue;
      for (const method of Object.keys(operations)) {
        const path = template.replace(/\{(\w+)\}/g, (_, name: string) => ids[name] ?? 'missing');
        const response = await fetch(`${server.url}${path}`, {
          method: method.toUpperCase(),
          headers: { authorization: `Bearer ${memberKey}`, 'content-type': 'application/json' },
          body: method === 'get' || method === 'delete' ? undefined : '{}',
          signal: AbortSignal.timeout(5_000),
        });
        await response.body?.cancel();
        if (response.status >= 500) problems.push(`${method.toUpperCase()} ${template}: ${response.status}`);
        // The fuzzed resources all live in the admin's workspace: the member sees none of them.
        if (template.includes('{') && response.status < 400) {
          problems.push(
            `${method.toUpperCase()} ${template}: ${response.status} for another workspace's resource`,
          );
        }
      }
    }
    expect(problems).toEqual([]);
  });
});
