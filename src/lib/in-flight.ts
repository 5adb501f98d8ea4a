import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/**
 * Load shedding on concurrency. Past capacity a Node process does not slow down evenly: it reads
 * every readable socket, starts each request, and they all wait together for CPU, so every answer
 * is late (T33 saw accepted p99 of 2 s at 1.5× capacity). Event-loop delay reacts only once that
 * queue has formed. A bound on requests in flight (Little's law: capacity × target latency) refuses
 * the excess at once, in `onRequest`, before auth, body parsing or any store call: a 503 costs a
 * fraction of a decide, so the process keeps up with the ones it accepts.
 */
export interface InFlightOptions {
  /** Requests admitted at once; the next is answered 503 until one of them has been answered. */
  readonly max: number;
  /** Which requests count (and may be shed); others pass untouched. */
  readonly applies: (request: FastifyRequest) => boolean;
  /** Seconds in the Retry-After of a shed answer. */
  readonly retryAfterS: number;
  /** Sends the 503 (the app's stable error body) and counts it. */
  readonly shed: (reply: FastifyReply) => FastifyReply;
  /**
   * How long an admitted request may take to deliver its body before its slot is given back (it
   * keeps waiting, unbounded, as a wait that costs no CPU): a caller that sends headers and stalls
   * its body must not hold slots and shed everyone else's decides. Default 1,000 ms.
   */
  readonly bodyDeadlineMs?: number;
}

export interface InFlight {
  /** Admitted and not yet answered (or aborted), less those released early. */
  readonly current: number;
  /**
   * Gives the request's slot back before its answer: for a wait that uses no CPU here (the Didit
   * call, up to its 1.5 s deadline), so a slow Didit does not fill the bound and shed healthy decides.
   */
  release(request: FastifyRequest): void;
}

/** Where an admitted request keeps its release and its body timer: properties, not WeakMaps (whose entries every young collection must trace). */
const SLOT = Symbol('risk.inFlightSlot');
interface Slot {
  readonly release: () => void;
  readonly stalled: NodeJS.Timeout;
}
type WithSlot = FastifyRequest & { [SLOT]?: Slot };
/** The releases of a connection's admitted requests: one 'close' listener per socket, however many are pipelined. */
const SOCKET_SLOTS = Symbol('risk.inFlightSocket');
type WithSlots = Socket & { [SOCKET_SLOTS]?: Set<() => void> };

/**
 * A pipelined request's response waits behind the one before it on its connection and has no socket
 * yet: if the connection drops first, that response never emits 'close', and its handler has
 * already cleared the body deadline. The socket's own 'close' releases whatever it still holds.
 */
function slotsOf(socket: WithSlots): Set<() => void> {
  let slots = socket[SOCKET_SLOTS];
  if (!slots) {
    const held = new Set<() => void>();
    socket[SOCKET_SLOTS] = slots = held;
    socket.once('close', () => {
      for (const release of held) release();
    });
  }
  return slots;
}

export function limitInFlight(app: FastifyInstance, options: InFlightOptions): InFlight {
  if (!(options.max >= 1)) throw new Error('in-flight limit must be at least 1');
  let current = 0;
  app.addHook('onRequest', (request, reply, done) => {
    if (!options.applies(request)) return done();
    if (current >= options.max) {
      void options.shed(reply.header('retry-after', String(options.retryAfterS)));
      return;
    }
    current += 1;
    // 'close' follows 'finish' on an answered response (kept alive or not) and fires alone on an
    // aborted one: one listener, one release per admission (a guard, as `release()` and the body
    // deadline may come first).
    let released = false;
    const slots = slotsOf(request.raw.socket);
    const release = () => {
      if (released) return;
      released = true;
      current -= 1;
      slots.delete(release);
    };
    slots.add(release);
    reply.raw.on('close', release);
    const stalled = setTimeout(release, options.bodyDeadlineMs ?? 1000);
    stalled.unref();
    (request as WithSlot)[SLOT] = { release, stalled };
    done();
  });
  app.addHook('preHandler', (request, _reply, done) => {
    const slot = (request as WithSlot)[SLOT];
    if (slot) clearTimeout(slot.stalled);
    done();
  });
  return {
    get current() {
      return current;
    },
    release(request) {
      (request as WithSlot)[SLOT]?.release();
    },
  };
}
