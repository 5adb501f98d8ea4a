import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { EvaluationInput } from '../engine/evaluate.js';
import type { LoadError } from '../engine/ruleset.js';
import type { TextFile } from './load.js';
import { REGEX_BUDGET, type RegexBudget } from './regex-guard.js';
import type { WorkerJob, WorkerReply } from './evaluate-worker.js';

/**
 * Untrusted rulesets (`POST /v1/evaluate`) and rule files from disk are compiled and run in a
 * worker thread with a hard deadline, one job at a time: when the deadline passes the thread is
 * terminated (V8 stops it mid-loop) and a fresh one takes its place. The event loop that answers
 * decides and health checks never runs untrusted work. The decide path keeps its own compiled,
 * trusted ruleset on the main thread and never waits for this.
 */
export interface SandboxLimits {
  /** Compile + evaluate of one `/v1/evaluate` body. */
  readonly evaluateDeadlineMs: number;
  /** Checking a rules directory (bigger, trusted-ish input; still must not hang a reload). */
  readonly checkDeadlineMs: number;
  /** Jobs waiting behind the running one; more are refused at once (503). */
  readonly maxQueue: number;
  /** A job that waited this long for its turn is refused rather than run late. */
  readonly maxWaitMs: number;
  /** A worker that does not start within this is given up on (the job is refused, never left hanging). */
  readonly startupMs: number;
  /** V8 heap of the worker: a list that doubles per step dies here, not in the service. */
  readonly memoryMb: number;
  readonly evaluateRegex: RegexBudget;
  readonly checkRegex: RegexBudget;
  /**
   * Workers idle this long are stopped: each holds ~55 MB (the rule compiler and the regex checker)
   * for jobs that come rarely (a rules reload, a playground call); the next job starts one again.
   */
  readonly idleMs: number;
}

export const SANDBOX_LIMITS: SandboxLimits = {
  evaluateDeadlineMs: 800,
  checkDeadlineMs: 5000,
  maxQueue: 4,
  maxWaitMs: 3000,
  startupMs: 20_000,
  memoryMb: 96,
  evaluateRegex: REGEX_BUDGET,
  checkRegex: { perPatternMs: 600, perLoadMs: 3000 },
  idleMs: 60_000,
};

export type SandboxOutcome =
  | { readonly kind: 'ok'; readonly decision?: unknown; readonly patterns: readonly string[] }
  /** The ruleset does not compile; errors marked `tooExpensive` are over a static budget. */
  | { readonly kind: 'rejected'; readonly errors: readonly LoadError[] }
  /** Killed at the deadline or out of memory. */
  | { readonly kind: 'too_expensive'; readonly reason: string }
  /** Queue full, waited too long, or no worker could start: try again later. */
  | { readonly kind: 'busy'; readonly reason: string };

export interface RuleSandbox {
  evaluate(files: readonly TextFile[], input: EvaluationInput): Promise<SandboxOutcome>;
  check(files: readonly TextFile[], now: number): Promise<SandboxOutcome>;
  /** Jobs waiting plus the running one (for tests and metrics). */
  pending(): number;
  /** Starts the worker and its spare now and resolves when both are ready (tests, or a warm start). */
  warm(): Promise<boolean>;
  /** A started worker is waiting for jobs (no start-up to wait for). */
  ready(): boolean;
  /** Workers running now (started or starting): 0 when idle past `idleMs`. */
  workers(): number;
  close(): Promise<void>;
}

type JobBody =
  | { kind: 'evaluate'; files: readonly TextFile[]; input: EvaluationInput }
  | { kind: 'check'; files: readonly TextFile[]; now: number };

interface Pending {
  readonly body: JobBody;
  readonly queuedAt: number;
  readonly resolve: (outcome: SandboxOutcome) => void;
}

interface Slot {
  readonly worker: Worker;
  readonly ready: Promise<boolean>;
  up: boolean;
}

/**
 * The worker runs from the same tree as this file: .js from dist, or .ts under tsx (tests, dev),
 * where a worker does not inherit tsx's loader and must register it itself.
 */
function startWorker(options: ConstructorParameters<typeof Worker>[1]): Worker {
  const here = fileURLToPath(import.meta.url);
  const url = new URL(`./evaluate-worker${path.extname(here)}`, import.meta.url);
  // Lowest CPU priority for this thread (on Linux a nice value is per thread), set before anything
  // loads: on a busy host the scheduler then favours the event loop that answers decides.
  const nice = "try { require('node:os').setPriority(19); } catch {}";
  if (path.extname(here) !== '.ts')
    return new Worker(`${nice} import(${JSON.stringify(url.href)});`, { ...options, eval: true });
  const api = import.meta.resolve('tsx/esm/api');
  return new Worker(
    `${nice} import(${JSON.stringify(api)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(url.href)}); });`,
    { ...options, eval: true },
  );
}

export interface SandboxOptions extends Partial<SandboxLimits> {
  /** Worker start failures and kills, for the operator (never the ruleset's content). */
  readonly log?: { warn(obj: object, msg: string): void };
}

export function createRuleSandbox(options: SandboxOptions = {}): RuleSandbox {
  const { log, ...overrides } = options;
  const limits: SandboxLimits = { ...SANDBOX_LIMITS, ...overrides };
  const queue: Pending[] = [];
  let slot: Slot | undefined;
  /** A started, warmed worker kept ready, so a job after a kill does not wait for a start-up (~1-3 s under tsx). */
  let spare: Slot | undefined;
  let running = false;
  let closed = false;
  let everReady = false;
  let nextId = 1;

  const spawn = (): Slot => {
    const worker = startWorker({
      resourceLimits: { maxOldGenerationSizeMb: limits.memoryMb, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 },
      stdout: false,
      stderr: false,
    });
    // An idle sandbox must not keep the process alive; a running job holds its own timer.
    worker.unref();
    const ready = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => onFail('startup timeout'), limits.startupMs);
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        worker.off('message', onMessage).off('error', onFail).off('exit', onFail);
        resolve(ok);
      };
      const onMessage = (message: { ready?: boolean }): void => {
        if (message?.ready) done(true);
      };
      const onFail = (reason: unknown): void => {
        const detail =
          reason instanceof Error
            ? { type: reason.name, code: (reason as { code?: string }).code, message: reason.message.slice(0, 200) }
            : { exit: reason };
        if (!closed) log?.warn({ sandbox: detail }, 'rule sandbox worker failed to start');
        done(false);
      };
      worker.on('message', onMessage).on('error', onFail).on('exit', onFail);
    });
    // A worker that dies while idle is simply replaced on the next job.
    worker.on('exit', () => {
      if (slot?.worker === worker) slot = undefined;
      if (spare?.worker === worker) spare = undefined;
    });
    worker.on('error', () => undefined);
    const started: Slot = { worker, ready, up: false };
    void ready.then((ok) => {
      started.up = ok;
      everReady ||= ok;
    });
    return started;
  };

  const discard = (dead: Slot): void => {
    void dead.worker.terminate();
    if (slot !== dead) return;
    slot = closed ? undefined : (spare ?? spawn());
    spare = closed ? undefined : spawn();
  };

  const runOn = (current: Slot, body: JobBody): Promise<SandboxOutcome> => {
    const id = nextId++;
    const deadline = body.kind === 'evaluate' ? limits.evaluateDeadlineMs : limits.checkDeadlineMs;
    const regex = body.kind === 'evaluate' ? limits.evaluateRegex : limits.checkRegex;
    // The worker gives up by itself at 60% of the deadline, which leaves the regex budget and one slow rule room.
    const softMs = Math.round(deadline * 0.6);
    const job: WorkerJob =
      body.kind === 'evaluate'
        ? { id, kind: 'evaluate', files: body.files, input: body.input, regex, softMs }
        : { id, kind: 'check', files: body.files, now: body.now, regex, softMs };
    return new Promise<SandboxOutcome>((resolve) => {
      const { worker } = current;
      const finish = (outcome: SandboxOutcome, kill: boolean): void => {
        clearTimeout(timer);
        worker.off('message', onMessage).off('error', onError).off('exit', onExit);
        if (kill) {
          log?.warn(
            { sandbox: { job: body.kind, outcome: outcome.kind === 'too_expensive' ? outcome.reason : outcome.kind } },
            'rule sandbox worker stopped and replaced',
          );
          discard(current);
        }
        resolve(outcome);
      };
      const onMessage = (reply: WorkerReply): void => {
        if (reply.id !== id) return;
        finish(
          reply.ok
            ? {
                kind: 'ok',
                patterns: reply.patterns,
                ...(reply.decision === undefined ? {} : { decision: reply.decision }),
              }
            : { kind: 'rejected', errors: reply.errors },
          false,
        );
      };
      const onError = (error: Error & { code?: string }): void => {
        const reason =
          error.code === 'ERR_WORKER_OUT_OF_MEMORY'
            ? `exceeded its ${limits.memoryMb} MB memory budget`
            : 'the rule sandbox failed while running it';
        finish({ kind: 'too_expensive', reason }, true);
      };
      const onExit = (): void =>
        finish({ kind: 'too_expensive', reason: 'the rule sandbox stopped while running it' }, true);
      const timer = setTimeout(
        () => finish({ kind: 'too_expensive', reason: `did not finish within its ${deadline} ms budget` }, true),
        deadline,
      );
      worker.on('message', onMessage).on('error', onError).on('exit', onExit);
      worker.postMessage(job);
    });
  };

  const execute = async (pending: Pending): Promise<SandboxOutcome> => {
    // Only time spent behind other jobs counts here; a worker's start-up has its own bound.
    if (performance.now() - pending.queuedAt > limits.maxWaitMs)
      return { kind: 'busy', reason: 'waited too long for the rule sandbox' };
    if (!slot) slot = spare ?? spawn();
    if (spare === slot) spare = undefined;
    // The spare starts with the first job: an idle service (most tests, the CLI) runs no worker at all.
    spare ??= spawn();
    const current = slot;
    // A client's job waits for a (re)starting worker only as long as it may wait at all; a reload
    // waits for the start-up bound. The worker keeps starting for the jobs after it.
    // The very first start (nothing warm yet) is waited for like a reload: it happens once.
    const patience =
      pending.body.kind === 'check' || !everReady
        ? limits.startupMs
        : limits.maxWaitMs - (performance.now() - pending.queuedAt);
    let waited: ReturnType<typeof setTimeout> | undefined;
    const ready = await Promise.race([
      current.ready,
      new Promise<'late'>((resolve) => (waited = setTimeout(() => resolve('late'), Math.max(0, patience)))),
    ]);
    clearTimeout(waited);
    if (ready === 'late') return { kind: 'busy', reason: 'the rule sandbox is restarting' };
    if (!ready) {
      discard(current);
      return { kind: 'busy', reason: 'the rule sandbox could not start' };
    }
    if (closed) return { kind: 'busy', reason: 'shutting down' };
    return runOn(current, pending.body);
  };

  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  const stopWorkers = (): void => {
    const workers = [slot, spare];
    slot = spare = undefined;
    for (const w of workers) void w?.worker.terminate();
  };

  const armIdle = (): void => {
    clearTimeout(idleTimer);
    idleTimer = setTimeout(stopWorkers, limits.idleMs);
    idleTimer.unref();
  };

  const pump = (): void => {
    if (running) return;
    clearTimeout(idleTimer);
    const next = queue.shift();
    if (!next) {
      armIdle();
      return;
    }
    running = true;
    void execute(next).then((outcome) => {
      running = false;
      next.resolve(outcome);
      pump();
    });
  };

  const submit = (body: JobBody): Promise<SandboxOutcome> => {
    if (closed) return Promise.resolve({ kind: 'busy', reason: 'shutting down' });
    // A rules reload goes first and is never refused for a full queue: a flood of evaluate calls
    // must not keep a fix off the decide path. The rules holder runs one reload at a time.
    const urgent = body.kind === 'check';
    if (!urgent && queue.length >= limits.maxQueue)
      return Promise.resolve({ kind: 'busy', reason: 'too many rulesets are being evaluated' });
    return new Promise((resolve) => {
      const pending: Pending = { body, queuedAt: urgent ? Number.POSITIVE_INFINITY : performance.now(), resolve };
      if (urgent) queue.unshift(pending);
      else queue.push(pending);
      pump();
    });
  };

  return {
    evaluate: (files, input) => submit({ kind: 'evaluate', files, input }),
    check: (files, now) => submit({ kind: 'check', files, now }),
    pending: () => queue.length + (running ? 1 : 0),
    ready: () => slot?.up === true,
    workers: () => (slot ? 1 : 0) + (spare ? 1 : 0),
    async warm() {
      if (closed) return false;
      slot ??= spare ?? spawn();
      if (spare === slot) spare = undefined;
      spare ??= spawn();
      const both = await Promise.all([slot.ready, spare.ready]);
      if (!running && queue.length === 0) armIdle();
      return both.every(Boolean);
    },
    async close() {
      closed = true;
      clearTimeout(idleTimer);
      for (const waiting of queue.splice(0)) waiting.resolve({ kind: 'busy', reason: 'shutting down' });
      const workers = [slot, spare];
      slot = spare = undefined;
      await Promise.all(workers.map((w) => w?.worker.terminate()));
    },
  };
}
