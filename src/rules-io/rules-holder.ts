import type { CompiledRuleset, LoadError } from '../engine/ruleset.js';
import { formatLoadError } from '../engine/ruleset.js';
import type { CompileResult } from '../engine/ruleset.js';

export interface ReloadOutcome {
  readonly ok: boolean;
  readonly hash?: string;
  readonly errors?: readonly LoadError[];
}

export interface RulesHolder {
  /** The last good ruleset; undefined only when none ever loaded (the service is then not ready). */
  current(): CompiledRuleset | undefined;
  reload(): Promise<ReloadOutcome>;
  lastReloadOk(): boolean;
}

export interface RulesHolderOptions {
  readonly load: () => Promise<CompileResult>;
  readonly onReload?: (outcome: ReloadOutcome, ruleset: CompiledRuleset | undefined) => void;
  readonly log?: { info(obj: object, msg: string): void; error(obj: object, msg: string): void };
}

/** Validate the whole set, then swap one reference: a decision sees the old set or the new one, never a mix. */
export function createRulesHolder(options: RulesHolderOptions): RulesHolder {
  let ruleset: CompiledRuleset | undefined;
  let ok = false;
  let running: Promise<ReloadOutcome> | undefined;

  const doReload = async (): Promise<ReloadOutcome> => {
    const result = await options.load();
    let outcome: ReloadOutcome;
    if (result.ok) {
      ruleset = result.ruleset;
      ok = true;
      outcome = { ok: true, hash: result.ruleset.hash };
      options.log?.info({ ruleset: result.ruleset.hash, rules: result.ruleset.rules.length }, 'ruleset loaded');
    } else {
      ok = false;
      outcome = { ok: false, errors: result.errors };
      options.log?.error(
        { ruleset: ruleset?.hash ?? null, errors: result.errors.map(formatLoadError) },
        'ruleset rejected; the last good ruleset keeps serving',
      );
    }
    options.onReload?.(outcome, ruleset);
    return outcome;
  };

  return {
    current: () => ruleset,
    lastReloadOk: () => ok,
    reload() {
      // Reloads never overlap; a request that arrives during one waits for it and runs again after.
      const next = (running ?? Promise.resolve()).then(doReload, doReload);
      running = next;
      return next;
    },
  };
}
