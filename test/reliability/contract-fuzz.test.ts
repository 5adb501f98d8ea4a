import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import fc from 'fast-check';
import t from 'tap';
import { SIGNALS } from '../../src/engine/signals.js';
import { readRuleDir } from '../../src/rules-io/load.js';
import { startTestService } from '../helpers/service.js';

/**
 * T19: requests generated from the OpenAPI document itself (1,000 positive examples and 1,000
 * negative mutations per operation with a JSON body); every reply must use a documented status
 * and match the documented schema for it.
 */
type Schema = {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: Schema | boolean;
  items?: Schema;
  enum?: unknown[];
  anyOf?: Schema[];
  oneOf?: Schema[];
  maxLength?: number;
  minLength?: number;
  pattern?: string;
  format?: string;
  minimum?: number;
  maximum?: number;
  maxItems?: number;
  minItems?: number;
  default?: unknown;
  propertyNames?: Schema;
};

const RUNS = Number(process.env.CONTRACT_RUNS ?? 1000);
const service = await startTestService({ RATE_LIMIT_USER_PER_MIN: '100000000', LOG_LEVEL: 'silent' });
t.teardown(() => service.close());
const document = (await service.app.inject({ method: 'GET', url: '/docs/json' })).json() as {
  paths: Record<
    string,
    Record<
      string,
      {
        requestBody?: { content: Record<string, { schema: Schema }> };
        responses: Record<string, { content?: Record<string, { schema: object }> }>;
      }
    >
  >;
};
const ajv = new (Ajv2020 as unknown as typeof Ajv2020.default)({ strict: false });
(addFormats as unknown as typeof addFormats.default)(ajv);

/**
 * What a JSON schema cannot say, taken from the contracts the route enforces: /v1/evaluate accepts
 * only declared signal names with their declared types (src/engine/signals.ts), and a supplied
 * ruleset must compile. Without these, 95% of "valid" evaluate bodies were 400s and nothing noticed.
 */
const signalValue = {
  bool: fc.boolean(),
  int: fc.integer({ min: -1e6, max: 1e6 }),
  double: fc.double({ min: -1e6, max: 1e6, noNaN: true, noDefaultInfinity: true }),
  string: fc.string({ maxLength: 64 }),
  map: fc.dictionary(
    fc.stringMatching(/^[a-z][a-z0-9_]{0,15}$/),
    fc.oneof(fc.string({ maxLength: 32 }), fc.integer(), fc.boolean()),
    { maxKeys: 3 },
  ),
} as const;
const shippedRules = (await readRuleDir('rules')).filter((f) => !f.name.startsWith('bypass'));
const smallRuleset = [
  {
    name: 'policy.yaml',
    text: 'policy:\n  score_bands: [{ min_score: 0, action: SKIP }]\n  cold_start_floor: PASSIVE\n  degraded_floor: PASSIVE\n',
  },
  {
    name: 'only.yaml',
    text: 'rules:\n  - { id: only-tor, description: d, when: "ip.tor", then: { min_action: FLASHING } }\n',
  },
];
const DOMAIN: Record<string, Record<string, fc.Arbitrary<unknown>>> = {
  // A callback is a redirect target (src/lib/callback-url.ts): https, a fully qualified public name, default port.
  '/v1/decide': {
    callback: fc
      .tuple(fc.domain(), fc.webPath(), fc.webQueryParameters())
      .filter(([domain]) => domain.includes('.') && !domain.split('.').some((label) => label.startsWith('xn--')))
      .map(([domain, path, query]) => `https://${domain}${path}${query ? `?${query}` : ''}`),
  },
  '/v1/evaluate': {
    signals: fc
      .subarray([...SIGNALS])
      .chain((specs) => fc.record(Object.fromEntries(specs.map((spec) => [spec.name, signalValue[spec.type]])))),
    ruleset: fc.constantFrom({ files: shippedRules }, { files: smallRuleset }),
  },
};

/** A body for `path` that the route must accept: the document's schema, refined by DOMAIN. */
function validBody(path: string, schema: Schema): fc.Arbitrary<unknown> {
  const domain = DOMAIN[path] ?? {};
  const properties = Object.fromEntries(
    Object.keys(schema.properties ?? {}).map((k) => [k, domain[k] ?? arbitrary(schema.properties![k]!, 1)]),
  );
  return schema.properties ? fc.record(properties, { requiredKeys: schema.required ?? [] }) : arbitrary(schema);
}

function arbitrary(schema: Schema, depth = 0): fc.Arbitrary<unknown> {
  if (schema.enum) return fc.constantFrom(...schema.enum);
  if (schema.anyOf || schema.oneOf) {
    // Alternatives inherit the parent's type and limits ({type: string, anyOf: [{format: ipv4}, ...]}).
    const { anyOf, oneOf, ...parent } = schema;
    return fc.oneof(...(anyOf ?? oneOf)!.map((s) => arbitrary({ ...parent, ...s }, depth + 1)));
  }
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'string':
      if (schema.format === 'uri') return fc.webUrl();
      if (schema.format === 'ipv4') return fc.ipV4();
      if (schema.format === 'ipv6') return fc.ipV6();
      if (schema.format === 'date-time')
        return fc
          .date({ min: new Date('2020-01-01'), max: new Date('2030-01-01'), noInvalidDate: true })
          .map((d) => d.toISOString());
      if (schema.pattern)
        return fc
          .stringMatching(new RegExp(schema.pattern))
          .filter((s) => s.length <= (schema.maxLength ?? 1e6) && s.length >= (schema.minLength ?? 0));
      return fc.string({ minLength: schema.minLength ?? 0, maxLength: Math.min(schema.maxLength ?? 64, 64) });
    case 'integer':
      return fc.integer({ min: schema.minimum ?? -1e6, max: schema.maximum ?? 1e6 });
    case 'number':
      return fc.double({ min: schema.minimum ?? -1e6, max: schema.maximum ?? 1e6, noNaN: true });
    case 'boolean':
      return fc.boolean();
    case 'array':
      return fc.array(schema.items ? arbitrary(schema.items, depth + 1) : fc.anything(), {
        minLength: schema.minItems ?? 0,
        maxLength: Math.max(schema.minItems ?? 0, Math.min(schema.maxItems ?? 3, 3)),
      });
    case 'object': {
      if (schema.properties) {
        const shape = Object.fromEntries(
          Object.entries(schema.properties).map(([k, v]) => [k, arbitrary(v, depth + 1)]),
        );
        return fc.record(shape, { requiredKeys: (schema.required ?? []).filter((k) => k in shape) });
      }
      const values =
        typeof schema.additionalProperties === 'object'
          ? arbitrary(schema.additionalProperties, depth + 1)
          : fc.string();
      const keys = schema.propertyNames?.pattern
        ? fc.stringMatching(new RegExp(schema.propertyNames.pattern))
        : fc.string({ maxLength: 16 });
      return fc.dictionary(keys, values, { maxKeys: 4 });
    }
    default:
      return fc.jsonValue({ maxDepth: 2 });
  }
}

/** Negative mutations: drop a required field, add an unknown one, or break a field's type. */
function mutate(path: string, schema: Schema): fc.Arbitrary<unknown> {
  const required = schema.required ?? [];
  return fc
    .tuple(validBody(path, schema), fc.nat(), fc.constantFrom('drop', 'extra', 'type', 'not-object'))
    .map(([value, n, how]) => {
      const copy = { ...(value as Record<string, unknown>) };
      if (how === 'drop' && required.length) delete copy[required[n % required.length]!];
      else if (how === 'extra') copy[`unexpected_${n % 10}`] = n;
      else if (how === 'type') copy[required[n % Math.max(1, required.length)] ?? 'x'] = n % 2 ? [n] : { nested: n };
      else return [value];
      return copy;
    });
}

/**
 * A body that names a decision must name one this service made: a well-formed body with an unknown
 * `decision_id` is a documented 404, not a success. Five real decisions stand in for them.
 */
const knownDecisions: string[] = [];
for (let i = 0; i < 5; i++) {
  const reply = await service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', ...service.auth },
    payload: JSON.stringify({ user_id: `fuzz-${i}`, device_id: 'd', ip: '89.160.20.112' }),
  });
  knownDecisions.push(reply.json().decision_id);
}
const namingKnownIds = (path: string, arb: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> =>
  path === '/v1/feedback'
    ? fc
        .tuple(arb, fc.nat())
        .map(([body, n]) => ({ ...(body as object), decision_id: knownDecisions[n % knownDecisions.length] }))
    : arb;

const validators = new Map<string, (body: unknown) => boolean>();
function conforms(path: string, method: string, status: number, body: string): string | undefined {
  const documented = document.paths[path]?.[method]?.responses[String(status)];
  if (!documented) return `undocumented status ${status}`;
  const schema = documented.content?.['application/json']?.schema;
  if (!schema) return undefined;
  const key = `${path} ${method} ${status}`;
  if (!validators.has(key)) validators.set(key, ajv.compile(schema));
  return validators.get(key)!(JSON.parse(body)) ? undefined : `reply does not match the ${status} schema`;
}

for (const [path, methods] of Object.entries(document.paths)) {
  for (const [method, operation] of Object.entries(methods)) {
    const schema = operation.requestBody?.content['application/json']?.schema;
    if (!schema || path.includes('{')) continue;
    t.test(
      `${method.toUpperCase()} ${path}: ${RUNS} generated and ${RUNS} mutated bodies, every reply as documented`,
      async (t) => {
        const counts: Record<string, number> = {};
        for (const [kind, arb] of [
          ['positive', namingKnownIds(path, validBody(path, schema))],
          ['negative', mutate(path, schema)],
        ] as const) {
          await fc.assert(
            fc.asyncProperty(arb, async (body) => {
              const response = await service.app.inject({
                method: method.toUpperCase() as 'POST',
                url: path,
                headers: { 'content-type': 'application/json', ...service.auth },
                payload: JSON.stringify(body),
              });
              counts[`${kind} ${response.statusCode}`] = (counts[`${kind} ${response.statusCode}`] ?? 0) + 1;
              const problem = conforms(path, method, response.statusCode, response.body);
              if (problem) throw new Error(`${problem}: ${response.body.slice(0, 200)}`);
            }),
            { numRuns: RUNS, seed: 19 },
          );
        }
        t.comment(`replies by kind and status: ${JSON.stringify(counts)}`);
        const count = (kind: string, status: (code: number) => boolean) =>
          Object.entries(counts)
            .filter(([k]) => k.startsWith(`${kind} `) && status(Number(k.split(' ')[1])))
            .reduce((sum, [, n]) => sum + n, 0);
        t.equal(
          count('positive', (c) => c >= 200 && c < 300),
          RUNS,
          `every valid body succeeds: ${count('positive', (c) => c >= 200 && c < 300)} of ${RUNS} got 2xx`,
        );
        t.equal(
          count('negative', (c) => c >= 400 && c < 500),
          RUNS,
          `every mutated body is refused: ${count('negative', (c) => c >= 400 && c < 500)} of ${RUNS} got 4xx`,
        );
        t.equal(count('positive', (c) => c >= 500) + count('negative', (c) => c >= 500), 0, 'no 5xx');
      },
    );
  }
}
