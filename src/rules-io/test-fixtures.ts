import { z } from 'zod';
import { signalTypeProblems, type Signals } from '../engine/signals.js';
import { isFixturesFile, parseYaml, type TextFile } from './load.js';

// `rules/fixtures.yaml`: named signal sets that rule test cases start from (`base: returning-user`),
// so a signal every SKIP needs is added in one place instead of in every test file.

const attributeValue = z.union([z.string(), z.number(), z.boolean()]);
/** null makes a signal unknown (absent), as an outage or a missing input leaves it in production. */
const signalValue = z.union([z.boolean(), z.number(), z.string(), z.record(z.string(), attributeValue), z.null()]);
export const signalMapSchema = z.record(z.string(), signalValue);
export type SignalMap = z.infer<typeof signalMapSchema>;

export const FIXTURE_NAME = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;

const fixturesFileSchema = z.strictObject({
  fixtures: z.record(
    z.string().regex(FIXTURE_NAME, 'a fixture name is kebab-case, such as returning-user'),
    z.strictObject({
      description: z.string().optional(),
      /** Another fixture this one starts from. */
      base: z.string().optional(),
      signals: signalMapSchema,
    }),
  ),
});

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * `own` over `base`. Signals are flat (`device.known`), so this is a key-by-key merge, one level
 * deeper for map signals (`request.attributes`), where a case names only the attributes it changes.
 * null survives the merge (a later layer may set the signal again); `knownSignals` drops it.
 */
export function mergeSignals(base: SignalMap, own: SignalMap): SignalMap {
  const merged: SignalMap = { ...base };
  for (const [name, value] of Object.entries(own)) {
    const below = merged[name];
    merged[name] = isMap(below) && isMap(value) ? { ...below, ...value } : value;
  }
  return merged;
}

/** What the engine sees: a signal set to null is absent, that is unknown. */
export function knownSignals(merged: SignalMap): Signals {
  const signals: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(merged)) if (value !== null) signals[name] = value;
  return signals as Signals;
}

export interface Fixtures {
  /** The fully merged signal map of a fixture (its base chain applied), or undefined for an unknown name. */
  readonly get: (name: string) => SignalMap | undefined;
  readonly names: readonly string[];
  /** Problems with fixtures.yaml itself: YAML, shape, unknown or misspelt signals, unknown or circular bases. */
  readonly problems: readonly string[];
}

const NONE: Fixtures = { get: () => undefined, names: [], problems: [] };

/** Reads fixtures.yaml from the files of a rules directory (none is fine: then no base can be named). */
export function loadFixtures(files: readonly TextFile[]): Fixtures {
  const file = files.find((f) => isFixturesFile(f.name));
  if (!file) return NONE;
  const parsedYaml = parseYaml(file.name, file.text);
  if ('reason' in parsedYaml)
    return { ...NONE, problems: [`${file.name}:${parsedYaml.line ?? 0}: ${parsedYaml.reason}`] };
  const parsed = fixturesFileSchema.safeParse(parsedYaml.content);
  if (!parsed.success)
    return {
      ...NONE,
      problems: [`${file.name}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`],
    };

  const declared = parsed.data.fixtures;
  const names = Object.keys(declared);
  const problems: string[] = [];
  const resolved = new Map<string, SignalMap>();
  const broken = new Set<string>();
  // Depth-first through `base`, with the chain kept to name a cycle instead of overflowing the stack.
  const resolve = (name: string, chain: readonly string[]): SignalMap | undefined => {
    const done = resolved.get(name);
    if (done) return done;
    if (broken.has(name)) return undefined;
    const fixture = declared[name]!;
    let below: SignalMap = {};
    if (fixture.base !== undefined) {
      if (chain.includes(fixture.base)) {
        problems.push(
          `${file.name}: fixture ${name}: base ${fixture.base} is circular (${[...chain, name, fixture.base].join(' -> ')})`,
        );
        broken.add(name);
        return undefined;
      }
      if (!Object.hasOwn(declared, fixture.base)) {
        problems.push(`${file.name}: fixture ${name}: base ${fixture.base} is not a fixture (${names.join(', ')})`);
        broken.add(name);
        return undefined;
      }
      const base = resolve(fixture.base, [...chain, name]);
      if (!base) {
        broken.add(name);
        return undefined;
      }
      below = base;
    }
    const own = signalTypeProblems(fixture.signals);
    if (own.length > 0) {
      problems.push(`${file.name}: fixture ${name}: ${own.join('; ')}`);
      broken.add(name);
      return undefined;
    }
    const merged = mergeSignals(below, fixture.signals);
    resolved.set(name, merged);
    return merged;
  };
  for (const name of names) resolve(name, []);
  return { get: (name) => (Object.hasOwn(declared, name) ? resolved.get(name) : undefined), names, problems };
}
