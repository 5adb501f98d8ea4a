import type { Cluster, Command, Redis } from 'ioredis';
import { onEveryNode } from './client-nodes.js';

/** The error a command gets when its deadline passes unanswered (ioredis's own `commandTimeout` wording). */
export const COMMAND_TIMED_OUT = 'Command timed out';

const DEADLINES = Symbol('risk.commandDeadlines');

/** The longest delay Node's timers take (2^31 - 1 ms, about 24.8 days). */
const TIMEOUT_MAX = 2 ** 31 - 1;

interface Deadlines {
  readonly timeoutMs: number;
  /** Commands in the queue: unanswered ones, and answered ones not yet dropped. */
  readonly queued: () => number;
}

type WithDeadlines = Redis & { [DEADLINES]?: Deadlines };

/**
 * Every command sent on `client` that is still unanswered `timeoutMs` after it was sent fails with
 * "Command timed out", as ioredis's `commandTimeout` option does, but with one timer for the
 * connection instead of one per command.
 *
 * Why not the option: it arms a timer for each command, clears it on the answer and deletes the
 * property that held it. On Node 20 (V8 11.3), with it on, TurboFan aborted every optimisation of
 * `setTimeout` and of ioredis's `sendCommand` ("Maps became deprecated during optimization") and
 * tried again for as long as the process ran: about 1 s of compile in a 35 s bench probe, on the
 * server's own core; with it off, none (`--trace-opt`; `test/bench/README.md`).
 *
 * How: a queue of the commands in the order they were sent, with their deadlines and promises.
 * Commands leave it once answered (checked at each send and at the timer), so it holds about as many
 * as Redis has not yet answered. So does one whose promise was renewed: a Cluster transaction or
 * pipeline retried after TRYAGAIN or CLUSTERDOWN renews its commands' promises and sends them again,
 * a new wait with a new deadline, as ioredis's option gave it. The one timer fires at the oldest
 * unanswered command's deadline, fails every command whose deadline has passed, and is armed again
 * for the next. It is unreferenced: the connection keeps the process alive while a command waits,
 * and a closed connection fails its commands itself.
 */
export function enforceCommandDeadlines(client: Redis, timeoutMs: number): void {
  const target = client as WithDeadlines;
  if (target[DEADLINES] !== undefined) return;
  const commands: Array<Command | undefined> = [];
  const deadlines: number[] = [];
  const promises: Array<Promise<unknown> | undefined> = [];
  let head = 0;
  let timer: NodeJS.Timeout | undefined;
  target[DEADLINES] = { timeoutMs, queued: () => commands.length - head };

  const shift = () => {
    commands[head] = undefined;
    promises[head] = undefined;
    head += 1;
    if (head === commands.length) {
      commands.length = 0;
      promises.length = 0;
      deadlines.length = 0;
      head = 0;
    } else if (head >= 1024 && head * 2 >= commands.length) {
      commands.splice(0, head);
      promises.splice(0, head);
      deadlines.splice(0, head);
      head = 0;
    }
  };
  /** Still waiting on the send that queued it: unanswered, and its promise not renewed by a retry. */
  const waiting = (i: number) => !commands[i]!.isSettled && commands[i]!.promise === promises[i];
  const dropAnswered = () => {
    while (head < commands.length && !waiting(head)) shift();
  };
  const arm = (now: number) => {
    if (timer !== undefined || head === commands.length) return;
    // Node turns a delay past TIMEOUT_MAX into 1 ms (and warns): a huge setting would wake it every ms.
    timer = setTimeout(expire, Math.min(TIMEOUT_MAX, Math.max(1, Math.ceil(deadlines[head]! - now))));
    timer.unref();
  };
  const expire = () => {
    timer = undefined;
    const now = performance.now();
    while (head < commands.length) {
      if (waiting(head)) {
        if (deadlines[head]! > now) break;
        commands[head]!.reject(new Error(COMMAND_TIMED_OUT));
      }
      shift();
    }
    arm(now);
  };

  const send = client.sendCommand;
  client.sendCommand = function sendWithDeadline(this: Redis, command: Command, stream?: unknown) {
    const reply = send.call(this, command, stream as never);
    // Refused at once (closed, or not writable with the offline queue off): nothing to wait for.
    if (!command.isSettled) {
      dropAnswered();
      const now = performance.now();
      commands.push(command);
      promises.push(command.promise);
      deadlines.push(now + timeoutMs);
      arm(now);
    }
    return reply;
  } as Redis['sendCommand'];
}

/** The deadline `enforceCommandDeadlines` gave this connection and its queue, if any (for tests and diagnostics). */
export function commandDeadlinesOf(client: Redis): Deadlines | undefined {
  return (client as WithDeadlines)[DEADLINES];
}

/** Every connection of the client gets the deadline (`onEveryNode`: Sentinel's master, each Cluster node). */
export function enforceClientDeadlines<T extends Redis | Cluster>(client: T, timeoutMs: number): T {
  onEveryNode(client, (node) => enforceCommandDeadlines(node, timeoutMs));
  return client;
}
