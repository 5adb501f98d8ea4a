import type { Pseudonymiser } from '../store/pseudonymise.js';
import type { DeadLetter, Store } from '../store/store.js';
import type { DeadLetterContent, WebhookHandler, WebhookOutcome } from './webhook-handler.js';

export interface DeadLetterView {
  readonly letter: DeadLetter;
  /** Didit's session id and status from the sealed delivery (never the user's vendor_data). */
  readonly sessionId?: string;
  readonly status?: string;
  readonly content?: DeadLetterContent;
}

function open(ids: Pseudonymiser, letter: DeadLetter): DeadLetterView {
  const plain = ids.unseal(letter.sealed);
  if (!plain) return { letter };
  try {
    const content = JSON.parse(plain) as DeadLetterContent;
    const body = JSON.parse(content.body) as { session_id?: unknown; status?: unknown };
    return {
      letter,
      content,
      ...(typeof body.session_id === 'string' ? { sessionId: body.session_id.slice(0, 100) } : {}),
      ...(typeof body.status === 'string' ? { status: body.status.slice(0, 40) } : {}),
    };
  } catch {
    return { letter };
  }
}

export async function listDeadLetters(store: Store, ids: Pseudonymiser, now: number): Promise<DeadLetterView[]> {
  return (await store.listDeadLetters(now)).map((letter) => open(ids, letter));
}

export interface ReplayResult {
  readonly id: string;
  readonly outcome: WebhookOutcome | { result: 'unsealable' };
  /** True when the letter was settled (applied, or found not to apply) and removed. */
  readonly removed: boolean;
}

/**
 * Runs each dead letter through the webhook handler again (after a fix), with its signature checked
 * as on arrival but no freshness window. A letter that now settles is removed; one that still cannot
 * apply, or meets a temporary failure, stays until its week is over.
 */
export async function replayDeadLetters(deps: {
  store: Store;
  ids: Pseudonymiser;
  handle: WebhookHandler;
  now: number;
}): Promise<ReplayResult[]> {
  const results: ReplayResult[] = [];
  for (const view of await listDeadLetters(deps.store, deps.ids, deps.now)) {
    if (!view.content) {
      results.push({ id: view.letter.id, outcome: { result: 'unsealable' }, removed: false });
      continue;
    }
    const outcome = await deps.handle(Buffer.from(view.content.body, 'utf8'), view.content.headers, { replay: true });
    const settled = outcome.httpStatus === 200 && outcome.result !== 'dead_letter' && outcome.result !== 'hold';
    if (settled) await deps.store.removeDeadLetter(view.letter.id);
    results.push({ id: view.letter.id, outcome, removed: settled });
  }
  return results;
}
