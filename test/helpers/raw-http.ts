import net from 'node:net';

export interface RawReply {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
  /** The whole reply as bytes arrived, for "never echoes" checks. */
  readonly raw: string;
}

/**
 * One request written byte for byte on its own connection: the request target goes out exactly as
 * given (fetch, http.request and light-my-request normalise or refuse some of the spellings tested).
 */
export function rawRequest(
  port: number,
  head: string,
  body: string | Buffer = '',
  timeoutMs = 10_000,
): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no reply within ${timeoutMs} ms to ${head.split('\r\n', 1)[0]!.slice(0, 80)}`));
    }, timeoutMs);
    socket.on('connect', () =>
      socket.end(Buffer.concat([Buffer.from(head, 'latin1'), Buffer.isBuffer(body) ? body : Buffer.from(body)])),
    );
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', () => undefined); // a reset after the reply is written is how node ends refused requests
    socket.on('close', () => {
      clearTimeout(timer);
      const raw = Buffer.concat(chunks).toString('latin1');
      const split = raw.indexOf('\r\n\r\n');
      const lines = (split === -1 ? raw : raw.slice(0, split)).split('\r\n');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const at = line.indexOf(':');
        if (at > 0) headers[line.slice(0, at).toLowerCase()] = line.slice(at + 1).trim();
      }
      let text = split === -1 ? '' : raw.slice(split + 4);
      if (headers['transfer-encoding'] === 'chunked') text = dechunk(text);
      resolve({ status, headers, body: Buffer.from(text, 'latin1').toString('utf8'), raw });
    });
  });
}

function dechunk(text: string): string {
  let out = '';
  let rest = text;
  for (;;) {
    const eol = rest.indexOf('\r\n');
    const size = parseInt(rest.slice(0, eol), 16);
    if (!(size > 0)) return out;
    out += rest.slice(eol + 2, eol + 2 + size);
    rest = rest.slice(eol + 2 + size + 2);
  }
}

/** A request head: `METHOD target HTTP/1.1`, Host, the extra header lines, a JSON content type when there is a body. */
export function head(
  method: string,
  target: string,
  options: { headers?: Record<string, string>; body?: string | Buffer; contentType?: string | null } = {},
): string {
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
  const length = options.body === undefined ? 0 : Buffer.byteLength(options.body);
  const type = options.contentType === undefined ? (length > 0 ? 'application/json' : null) : options.contentType;
  if (type !== null) lines.push(`Content-Type: ${type}`);
  if (options.body !== undefined) lines.push(`Content-Length: ${length}`);
  for (const [name, value] of Object.entries(options.headers ?? {})) lines.push(`${name}: ${value}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/**
 * The router's own table, from printRoutes (a tree: a child's path continues its parent's), as
 * `METHOD /path` strings. Independent of anything our code records about routes.
 */
export function routerTable(printed: string): string[] {
  const routes: string[] = [];
  const stack: string[] = [];
  for (const line of printed.split('\n')) {
    const match = /^((?:[│ ] {3})*)[├└]── (\S+)(?: \(([^)]+)\))?$/.exec(line);
    if (!match) continue;
    const depth = match[1]!.length / 4;
    stack.length = depth;
    const path = (stack[depth - 1] ?? '') + match[2]!;
    stack.push(path);
    for (const method of (match[3] ?? '')
      .split(',')
      .map((m) => m.trim())
      .filter(Boolean))
      routes.push(`${method} ${path}`);
  }
  return routes.sort();
}
