import net from 'node:net';

/**
 * An open-loop HTTP/1.1 load generator on raw keep-alive sockets, for overload tests.
 *
 * node:http's client costs about as much CPU per request as a decide, so on a 2-core box it, not the
 * service, sets the "capacity", and its Agent queues whatever its sockets cannot carry: past that
 * point the latency measured is the client's own queue, which no server can shorten. Here a request
 * is pre-serialised bytes written to an idle socket (a new one is opened when none is idle, up to
 * `perSource` per caller address; past that the request fails at once as 'client_full', as a caller's
 * bounded pool that fails fast would), and the answer is read from the status line and Content-Length
 * alone, so the queue that forms is in front of the service (kernel buffers, its event loop).
 */
export interface Answer {
  /** HTTP status, or the socket error code. */
  readonly status: number | string;
  /** From the request's bytes being written to its answer's last byte. */
  readonly ms: number;
  readonly retryAfter?: string;
}

export interface Target {
  readonly port: number;
  /** The decide body for request i (its user, IP…), as JSON. */
  readonly body: (i: number) => string;
  readonly path: string;
  readonly headers: Record<string, string>;
  /**
   * Loopback source addresses to spread connections over (Linux routes all of 127/8 to lo): one
   * caller address would meet the service's per-address connection cap, a fleet of callers does not.
   */
  readonly sources: readonly string[];
  /** Connections per source address at most; a request finding none idle and no room fails as 'client_full'. */
  readonly perSource: number;
}

interface Conn {
  readonly socket: net.Socket;
  buffer: Buffer;
  busy?: { started: number; resolve: (a: Answer) => void };
  ready: boolean;
}

export class OpenLoop {
  private readonly idle: Conn[] = [];
  private readonly open = new Set<Conn>();
  private readonly perSourceCount = new Map<string, number>();
  private next = 0;

  constructor(private readonly target: Target) {}

  get connections(): number {
    return this.open.size;
  }

  private request(i: number): Buffer {
    const body = this.target.body(i);
    const head = [
      `POST ${this.target.path} HTTP/1.1`,
      'host: 127.0.0.1',
      'content-type: application/json',
      `content-length: ${Buffer.byteLength(body)}`,
      ...Object.entries(this.target.headers).map(([k, v]) => `${k}: ${v}`),
    ].join('\r\n');
    return Buffer.from(`${head}\r\n\r\n${body}`);
  }

  private connect(): Conn | undefined {
    const { sources, perSource } = this.target;
    for (let tries = 0; tries < sources.length; tries++) {
      const source = sources[this.next++ % sources.length]!;
      const count = this.perSourceCount.get(source) ?? 0;
      if (count >= perSource) continue;
      this.perSourceCount.set(source, count + 1);
      const socket = net.connect({ host: '127.0.0.1', port: this.target.port, localAddress: source, noDelay: true });
      const conn: Conn = { socket, buffer: Buffer.alloc(0), ready: false };
      this.open.add(conn);
      socket.on('connect', () => (conn.ready = true));
      socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
      const gone = (code: string) => {
        if (!this.open.delete(conn)) return;
        this.perSourceCount.set(source, (this.perSourceCount.get(source) ?? 1) - 1);
        const i = this.idle.indexOf(conn);
        if (i >= 0) this.idle.splice(i, 1);
        const busy = conn.busy;
        conn.busy = undefined;
        busy?.resolve({ status: code, ms: performance.now() - busy.started });
      };
      socket.on('error', (error: NodeJS.ErrnoException) => gone(error.code ?? 'error'));
      socket.on('close', () => gone('closed'));
      return conn;
    }
    return undefined;
  }

  private onData(conn: Conn, chunk: Buffer): void {
    conn.buffer = conn.buffer.length === 0 ? chunk : Buffer.concat([conn.buffer, chunk]);
    for (;;) {
      const end = conn.buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = conn.buffer.subarray(0, end).toString('latin1');
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (conn.buffer.length < end + 4 + length) return;
      conn.buffer = conn.buffer.subarray(end + 4 + length);
      const busy = conn.busy;
      conn.busy = undefined;
      const retryAfter = /\r\nretry-after: *([^\r]+)/i.exec(head)?.[1];
      busy?.resolve({
        status: Number(head.slice(9, 12)),
        ms: performance.now() - (busy?.started ?? 0),
        ...(retryAfter ? { retryAfter } : {}),
      });
      if (/\r\nconnection: *close/i.test(head)) conn.socket.destroy();
      else this.idle.push(conn);
    }
  }

  /** Sends request i now on an idle (or new) connection. */
  send(i: number): Promise<Answer> {
    const conn = this.idle.shift() ?? this.connect();
    if (!conn) return Promise.resolve({ status: 'client_full', ms: 0 });
    return new Promise<Answer>((resolve) => {
      conn.busy = { started: performance.now(), resolve };
      conn.socket.write(this.request(i));
    });
  }

  /** Opens `count` connections ahead of the load, so handshakes are not part of what is measured. */
  async warm(count: number): Promise<void> {
    const made: Conn[] = [];
    for (let i = 0; i < count; i++) {
      const conn = this.connect();
      if (conn) made.push(conn);
    }
    await Promise.all(
      made.map((c) => (c.ready ? undefined : new Promise<void>((r) => c.socket.once('connect', () => r())))),
    );
    for (const c of made) if (this.open.has(c)) this.idle.push(c);
  }

  /** Open loop: `rate` requests per second for `seconds`, sent on schedule whatever the answers do. */
  async paced(rate: number, seconds: number, offset: number): Promise<Answer[]> {
    const pending: Array<Promise<Answer>> = [];
    const started = performance.now();
    let i = 0;
    while (performance.now() - started < seconds * 1000) {
      const due = Math.floor(((performance.now() - started) * rate) / 1000);
      for (; i <= due; i++) pending.push(this.send(offset + i));
      await new Promise((r) => setTimeout(r, 1));
    }
    return Promise.all(pending);
  }

  /** Closed loop: `workers` requests outstanding at all times for `seconds`; answers per second by status. */
  async closed(workers: number, seconds: number, offset: number): Promise<Answer[]> {
    const answers: Answer[] = [];
    const started = performance.now();
    let i = 0;
    await Promise.all(
      Array.from({ length: workers }, async () => {
        while (performance.now() - started < seconds * 1000) answers.push(await this.send(offset + i++));
      }),
    );
    return answers;
  }

  close(): void {
    for (const conn of this.open) conn.socket.destroy();
  }
}
