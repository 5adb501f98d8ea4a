import { STATUS_CODES, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { ERROR_STATUS, type ErrorCode } from '../errors.js';

/**
 * Requests node's HTTP parser refuses before fastify sees them (a bad request line or header, headers
 * over the size cap, a request that outlived its deadline): our error shape, never fastify's body.
 */
export function clientErrorHandler(error: Error & { code?: string }, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [code, message]: [ErrorCode, string] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? ['RISK_ERR_HEADERS_TOO_LARGE', 'request headers are too large']
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? ['RISK_ERR_REQUEST_TIMEOUT', 'the request took too long']
        : ['RISK_ERR_BAD_REQUEST', 'the request is not valid HTTP'];
  const status = ERROR_STATUS[code];
  const body = JSON.stringify({ code, message });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/** CONNECT is for proxies: node would drop the connection without a word, fastify never sees it. */
export function refuseConnect(server: Server): void {
  server.on('connect', (_request, socket: Duplex) =>
    clientErrorHandler(Object.assign(new Error('CONNECT'), { code: 'CONNECT' }), socket),
  );
}
