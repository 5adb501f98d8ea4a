import type { Socket } from 'node:net';
import type { Cluster, Redis } from 'ioredis';
import { onEveryNode } from './client-nodes.js';

const COALESCED = Symbol('risk.turnWrites');

type CoalescedSocket = Socket & { [COALESCED]?: true };

/**
 * The writes one event-loop turn makes to `socket` leave in one: the first corks it and the check
 * phase of the same turn (setImmediate) uncorks it, so the Writable hands every chunk to one
 * `writev`. Under load a turn reads several sign-ins and each sends its script; written one by one,
 * each was a system call and, with Redis on another core, often a wake-up of Redis for a few bytes
 * (`test/bench/README.md`: 12-15 µs of a saturated decide). Redis then reads the batch in one read and
 * answers it in one write. A command waits at most for the rest of its turn's callbacks, which had
 * to run before its answer could be read anyway; nothing waits for a timer, and a turn with no
 * write schedules nothing. Unlike ioredis's auto-pipelining, no object is built per batch.
 * The one write that never leaves is one made after the loop's last turn (in a process 'exit'
 * handler): nothing here writes to Redis then, and shutdown awaits `quit()`, whose `end()` uncorks.
 */
export function coalesceTurnWrites(socket: Socket): void {
  const target = socket as CoalescedSocket;
  if (target[COALESCED]) return;
  target[COALESCED] = true;
  const write = socket.write;
  let corked = false;
  const flush = () => {
    corked = false;
    socket.uncork();
  };
  socket.write = function writeInTurn(this: Socket, ...args: Parameters<Socket['write']>) {
    if (!corked) {
      corked = true;
      socket.cork();
      setImmediate(flush);
    }
    return write.apply(this, args);
  } as Socket['write'];
}

/** Whether `coalesceTurnWrites` has been applied to this socket (for tests and diagnostics). */
export function writesCoalesced(socket: Socket | undefined): boolean {
  return (socket as CoalescedSocket | undefined)?.[COALESCED] === true;
}

/**
 * Every connection the client opens coalesces its turn's writes: the first, each reconnect's (a new
 * socket), a Sentinel-resolved master's, and every Cluster node's as the cluster discovers it.
 */
export function coalesceClientWrites(client: Redis | Cluster): void {
  onEveryNode(client, (node) => {
    const apply = () => {
      if (node.stream) coalesceTurnWrites(node.stream as Socket);
    };
    apply();
    node.on('connect', apply);
  });
}
