/**
 * Worker thread entry: compiles (and for `/v1/evaluate`, runs) an untrusted ruleset off the event
 * loop. The parent enforces the deadline by terminating this thread, so nothing here needs to be
 * cooperative: a runaway expression is simply killed with its thread.
 */
import { parentPort } from 'node:worker_threads';
import { evaluate, type EvaluationInput } from '../engine/evaluate.js';
import type { RegexGuard } from '../engine/ruleset.js';
import { compileFromTexts, type TextFile } from './load.js';
import { createRecheckGuard, warmRecheck, type RegexBudget } from './regex-guard.js';

export type WorkerJob =
  | {
      readonly id: number;
      readonly kind: 'evaluate';
      readonly files: readonly TextFile[];
      readonly input: EvaluationInput;
      readonly regex: RegexBudget;
      readonly softMs: number;
    }
  | {
      readonly id: number;
      readonly kind: 'check';
      readonly files: readonly TextFile[];
      readonly now: number;
      readonly regex: RegexBudget;
      readonly softMs: number;
    };

export type WorkerReply =
  | { readonly id: number; readonly ok: true; readonly decision?: unknown; readonly patterns: readonly string[] }
  | {
      readonly id: number;
      readonly ok: false;
      readonly errors: readonly {
        file: string;
        line?: number;
        rule?: string;
        reason: string;
        tooExpensive?: boolean;
      }[];
    };

/** The guard for one job, recording the patterns it accepted so the parent can skip re-checking them. */
function recordingGuard(budget: RegexBudget): { guard: RegexGuard; accepted: string[] } {
  const inner = createRecheckGuard(budget);
  const accepted: string[] = [];
  const guard: RegexGuard = (pattern) => {
    const problem = inner(pattern);
    if (problem === undefined) accepted.push(pattern);
    return problem;
  };
  return { guard, accepted };
}

function run(job: WorkerJob): WorkerReply {
  const { guard, accepted } = recordingGuard(job.regex);
  const now = job.kind === 'evaluate' ? job.input.now : job.now;
  // Stopping here between rules answers in time without a kill (a kill costs a worker start-up);
  // the parent's hard deadline is for what cannot stop itself.
  const started = performance.now();
  const outOfTime = (): string | undefined =>
    performance.now() - started > job.softMs ? `compiling took over ${job.softMs} ms` : undefined;
  const compiled = compileFromTexts(job.files, { regexGuard: guard, now, outOfTime });
  if (!compiled.ok) return { id: job.id, ok: false, errors: compiled.errors };
  if (job.kind === 'check') return { id: job.id, ok: true, patterns: accepted };
  const { bypass: _bypass, ...decision } = evaluate(compiled.ruleset, job.input);
  return { id: job.id, ok: true, decision, patterns: accepted };
}

const WARM_UP: readonly TextFile[] = [
  {
    name: 'policy.yaml',
    text: 'policy:\n  score_bands: [{ min_score: 0, action: SKIP }]\n  cold_start_floor: PASSIVE\n  degraded_floor: PASSIVE\n',
  },
  {
    name: 'warm.yaml',
    text: 'rules:\n  - { id: warm, description: d, when: "[1, 2].exists(x, x > 1) && !ip.tor", then: { score: 1 } }\n',
  },
];

const port = parentPort;
if (port) {
  // Pay the one-off start-up (recheck's automata, first YAML/CEL compiles) before taking jobs, so
  // it never counts against a job's deadline.
  warmRecheck();
  for (let i = 0; i < 20; i++)
    run({
      id: 0,
      kind: 'evaluate',
      files: WARM_UP,
      input: { signals: { 'ip.tor': false } as EvaluationInput['signals'], now: 0 },
      regex: { perPatternMs: 100, perLoadMs: 100 },
      softMs: 5000,
    });
  port.on('message', (job: WorkerJob) => port.postMessage(run(job)));
  port.postMessage({ ready: true });
}
