import { createRequire } from 'node:module';
import type { RegexGuard, RegexRefusal } from '../engine/ruleset.js';

type Recheck = typeof import('recheck');
let loaded: Recheck | undefined;
/**
 * recheck (a Scala.js bundle) is ~9 MB of live heap once loaded, about a fifth of a serving
 * process's, and every full collection marks it again. It is loaded on the first pattern to check:
 * a service whose rules have no `matches()` never carries it, and the rule sandbox's worker, where
 * reloads are checked, loads it in its own heap.
 */
const require = createRequire(import.meta.url);
// Resolved now, loaded later: a missing package still fails the process at start, not at the first reload.
require.resolve('recheck');
function recheck(): Recheck {
  loaded ??= require('recheck') as Recheck;
  return loaded;
}

/**
 * recheck proves a `matches()` pattern free of super-linear backtracking, but the proof itself can
 * be slow (ten crafted patterns took 4 s). Each check gets a time budget, and so does the whole
 * ruleset: a pattern whose check runs out of either is refused (fail closed), never accepted.
 */
// An ordinary pattern (`^pay_[a-z]+$`) takes 100-160 ms of the pure backend on an idle 2-core
// machine: 400 ms leaves room for a busy one without refusing honest rules, and stays inside the
// rule sandbox's 800 ms deadline.
export const REGEX_BUDGET = { perPatternMs: 400, perLoadMs: 600 } as const;

// recheck's default synchronous backend blocks this thread on a helper thread that talks to a
// native agent process; that agent sometimes stops answering after a timed-out check, and the
// caller then waits forever (seen here on the fifth slow pattern in a row). The pure backend runs
// in this thread and stops itself at `timeout`. recheck reads this setting at each call.
process.env.RECHECK_SYNC_BACKEND = 'pure';

export interface RegexBudget {
  readonly perPatternMs: number;
  readonly perLoadMs: number;
}

/** Verdicts of finished checks (safe or not), so a reload of unchanged rules re-checks nothing. */
const verdicts = new Map<string, RegexRefusal | undefined>();
const MAX_VERDICTS = 1000;

function remember(pattern: string, verdict: RegexRefusal | undefined): RegexRefusal | undefined {
  if (verdicts.size >= MAX_VERDICTS) verdicts.delete(verdicts.keys().next().value as string);
  verdicts.set(pattern, verdict);
  return verdict;
}

/** recheck's first call initialises its automata (~0.5 s here): done once, before any budget runs. */
let warm = false;
export function warmRecheck(): void {
  if (warm) return;
  recheck().checkSync('^a+$', '', { timeout: 5000 });
  warm = true;
}

/** A guard for one load: the per-load budget is shared by every pattern of that ruleset. */
export function createRecheckGuard(
  budget: RegexBudget = REGEX_BUDGET,
  now: () => number = performance.now.bind(performance),
): RegexGuard {
  let spent = 0;
  return (pattern) => {
    try {
      new RegExp(pattern);
    } catch (error) {
      return `invalid regex: ${(error as Error).message}`;
    }
    if (verdicts.has(pattern)) return verdicts.get(pattern);
    warmRecheck();
    const left = Math.min(budget.perPatternMs, budget.perLoadMs - spent);
    if (left <= 0)
      return {
        reason: `the regex safety check ran out of its ${budget.perLoadMs} ms budget for this ruleset`,
        tooExpensive: true,
      };
    const started = now();
    let result: ReturnType<Recheck['checkSync']>;
    try {
      result = recheck().checkSync(pattern, '', { timeout: left });
    } catch {
      // The pure backend can throw its timeout instead of reporting it: refused all the same.
      return { reason: `the regex safety check did not finish within ${Math.round(left)} ms`, tooExpensive: true };
    } finally {
      spent += now() - started;
    }
    if (result.status === 'vulnerable')
      return remember(
        pattern,
        `catastrophic backtracking (${(result as { complexity?: { summary?: string } }).complexity?.summary ?? 'vulnerable'})`,
      );
    if (result.status === 'safe') return remember(pattern, undefined);
    if (result.error.kind === 'timeout') {
      const refusal = {
        reason: `the regex safety check did not finish within ${Math.round(left)} ms`,
        tooExpensive: true,
      } as const;
      // Only a check that had the whole per-pattern budget is a verdict on the pattern itself.
      return left >= budget.perPatternMs ? remember(pattern, refusal) : refusal;
    }
    return remember(pattern, 'could not be proven safe');
  };
}
