import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { createDiditClient, DiditError } from '../../src/didit/client.js';

/**
 * The Didit client against real HTTP servers on loopback: it never follows a redirect (the API key
 * would go wherever Location points) and refuses a reply over 1 MB.
 */
type Handler = (request: IncomingMessage, response: ServerResponse) => void;

async function listen(handler: Handler): Promise<{ server: Server; base: string; hits: IncomingMessage[] }> {
  const hits: IncomingMessage[] = [];
  const server = createServer((request, response) => {
    hits.push(request);
    request.resume();
    handler(request, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits };
}

const SESSION_ID = '11111111-2222-4333-8444-555555555555';
const WORKFLOWS = { PASSIVE: 'wf-passive', FLASHING: 'wf-flashing', ACTIVE_3D: 'wf-active' };
const API_KEY = 'client-limits-api-key';

function clientFor(base: string, outcomes: string[]) {
  return createDiditClient({
    baseUrl: base,
    apiKey: API_KEY,
    workflows: WORKFLOWS,
    timeoutMs: 5000,
    onRequest: (_operation, outcome) => outcomes.push(outcome),
  });
}

const sessionReply = (padding: number) =>
  JSON.stringify({
    session_id: SESSION_ID,
    url: 'https://verify.didit.me/session/abc',
    status: 'Not Started',
    workflow_id: WORKFLOWS.PASSIVE,
    metadata: { pad: 'x'.repeat(padding) },
  });
const request = { workflowId: WORKFLOWS.PASSIVE, vendorData: 'user', metadata: {} };

t.test('every redirect status is refused: the target never sees a request, nor the API key', async (t) => {
  const target = await listen((_request, response) =>
    response.writeHead(201, { 'content-type': 'application/json' }).end(sessionReply(0)),
  );
  for (const status of [300, 301, 302, 303, 307, 308]) {
    const origin = await listen((req, response) =>
      response.writeHead(status, { location: `${target.base}${req.url}` }).end(),
    );
    const outcomes: string[] = [];
    const client = clientFor(origin.base, outcomes);
    const created = await client.createSession(request).then(
      () => undefined,
      (error: unknown) => error,
    );
    t.ok(created instanceof DiditError && created.code === 'bad_response', `${status} on create: bad_response`);
    const decision = await client.getDecision(SESSION_ID).then(
      () => undefined,
      (error: unknown) => error,
    );
    t.ok(decision instanceof DiditError && decision.code === 'bad_response', `${status} on decision: bad_response`);
    t.equal(origin.hits.length, 2, `${status}: both calls reached Didit`);
    t.same(outcomes, ['bad_response', 'bad_response'], `${status}: counted as bad_response`);
  }
  t.equal(target.hits.length, 0, 'the redirect target got no request');
});

t.test('the client would reach the target if it followed redirects (the check above can fail)', async (t) => {
  const target = await listen((_request, response) =>
    response.writeHead(201, { 'content-type': 'application/json' }).end(sessionReply(0)),
  );
  const origin = await listen((req, response) =>
    response.writeHead(307, { location: `${target.base}${req.url}` }).end(),
  );
  const following = await fetch(`${origin.base}/v3/session/`, {
    method: 'POST',
    body: '{}',
    headers: { 'x-api-key': API_KEY },
  });
  t.equal(following.status, 201);
  t.equal(target.hits.length, 1, 'a following client hands the request to the target');
  t.equal(target.hits[0]?.headers['x-api-key'], API_KEY, 'and the API key with it');
});

t.test('a reply over 1 MB is refused; one just under is accepted', async (t) => {
  for (const [size, chunked] of [
    [999_000, false],
    [999_000, true],
    [1_000_100, false],
    [1_000_100, true],
    [5_000_000, true],
  ] as const) {
    const body = sessionReply(size - sessionReply(0).length);
    t.equal(body.length, size);
    const server = await listen((_request, response) => {
      // Chunked: no content-length, so only counting the bytes can enforce the cap.
      response.writeHead(
        201,
        chunked
          ? { 'content-type': 'application/json' }
          : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
      );
      if (!chunked) return void response.end(body);
      for (let i = 0; i < body.length; i += 64 * 1024) response.write(body.slice(i, i + 64 * 1024));
      response.end();
    });
    const outcomes: string[] = [];
    const result = await clientFor(server.base, outcomes)
      .createSession(request)
      .then(
        (created) => created.session_id,
        (error: unknown) => (error instanceof DiditError ? error.code : String(error)),
      );
    const label = `${size} bytes${chunked ? ', chunked' : ''}`;
    if (size <= 1_000_000) {
      t.equal(result, SESSION_ID, `${label}: accepted`);
      t.same(outcomes, ['ok']);
    } else {
      t.equal(result, 'bad_response', `${label}: refused`);
      t.same(outcomes, ['bad_response']);
    }
  }
});
