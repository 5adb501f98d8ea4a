import type { IdKind, Pseudonymiser } from './pseudonymise.js';
import type { Migration } from './store.js';

/** Raw identifiers a request knows, by kind; only the user is required. */
export interface KnownIds {
  readonly user: string;
  readonly device?: string;
  readonly ip?: string;
  readonly nets?: readonly string[];
}

/**
 * What to move while `ID_HASH_KEY_PREVIOUS` is set: the user's previous pseudonym to the current one,
 * with the previous pseudonyms of every identifier this request knows renamed. Undefined outside a rotation.
 */
export function migrationOf(ids: Pseudonymiser, known: KnownIds): Migration | undefined {
  const previous = ids.previous;
  if (!previous) return undefined;
  const renames: Array<readonly [string, string]> = [];
  const add = (kind: IdKind, value: string | undefined) => {
    if (value === undefined) return;
    const pair = [previous.id(kind, value), ids.id(kind, value)] as const;
    if (!renames.some(([from]) => from === pair[0])) renames.push(pair);
  };
  add('device', known.device);
  add('ip', known.ip);
  for (const net of known.nets ?? []) add('net', net);
  return { from: previous.id('user', known.user), to: ids.id('user', known.user), renames };
}
