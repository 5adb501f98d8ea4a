import type { z } from 'zod';
import type { StepUpRung } from '../engine/ladder.js';
import { createBreaker, type Breaker } from './breaker.js';
import {
  createSessionResponse,
  decisionResponse,
  DIDIT_ID,
  type CreateSessionResponse,
  type DecisionResponse,
} from './schemas.js';

export type DiditErrorCode =
  | 'bad_request'
  | 'auth'
  | 'not_found'
  | 'rate_limited'
  | 'server'
  | 'timeout'
  | 'network'
  | 'circuit_open'
  | 'bad_response';

/** Didit's own error text stays in here (and in debug logs); callers see only the code. */
export class DiditError extends Error {
  constructor(
    readonly code: DiditErrorCode,
    readonly status: number | undefined,
    readonly retryAfterS?: number,
  ) {
    super(`didit ${code}${status ? ` (${status})` : ''}`);
  }
}

export interface CreateSessionRequest {
  readonly workflowId: string;
  readonly vendorData: string;
  readonly callback?: string;
  readonly metadata: Record<string, unknown>;
  readonly portraitImage?: string;
}

export interface DiditClient {
  readonly workflows: Readonly<Record<StepUpRung, string>>;
  createSession(request: CreateSessionRequest): Promise<CreateSessionResponse>;
  getDecision(sessionId: string): Promise<DecisionResponse>;
  circuitOpen(): boolean;
}

export interface DiditClientOptions {
  readonly baseUrl: string;
  readonly apiKey: string;
  readonly workflows: Readonly<Record<StepUpRung, string>>;
  readonly timeoutMs?: number;
  readonly fetch?: typeof fetch;
  readonly clock?: () => number;
  readonly breaker?: Breaker;
  readonly onRequest?: (operation: 'create_session' | 'get_decision', outcome: string) => void;
}

const MAX_RETRY_AFTER_S = 60;

function classify(status: number): DiditErrorCode {
  if (status === 401 || status === 403) return 'auth';
  if (status === 404) return 'not_found';
  if (status === 429) return 'rate_limited';
  if (status >= 500) return 'server';
  return 'bad_request';
}

export function createDiditClient(options: DiditClientOptions): DiditClient {
  const doFetch = options.fetch ?? fetch;
  const clock = options.clock ?? Date.now;
  const timeoutMs = options.timeoutMs ?? 1500;
  const breaker = options.breaker ?? createBreaker();
  const base = options.baseUrl.replace(/\/+$/, '');

  async function call<T>(
    operation: 'create_session' | 'get_decision',
    path: string,
    init: RequestInit,
    schema: z.ZodType<T>,
    okStatus: number,
  ): Promise<T> {
    if (!breaker.allow(clock())) {
      options.onRequest?.(operation, 'circuit_open');
      throw new DiditError('circuit_open', undefined);
    }
    let response: Response;
    try {
      response = await doFetch(`${base}${path}`, {
        ...init,
        // Never follow a redirect: it once dropped the auth header at Didit, and it is an SSRF lever.
        redirect: 'manual',
        signal: AbortSignal.timeout(timeoutMs),
        headers: {
          'x-api-key': options.apiKey,
          accept: 'application/json',
          ...(init.body ? { 'content-type': 'application/json' } : {}),
        },
      });
    } catch (error) {
      const code: DiditErrorCode =
        (error as Error).name === 'TimeoutError' || (error as Error).name === 'AbortError' ? 'timeout' : 'network';
      breaker.failure(clock());
      options.onRequest?.(operation, code);
      throw new DiditError(code, undefined);
    }
    if (response.status !== okStatus) {
      const code = response.status >= 300 && response.status < 400 ? 'bad_response' : classify(response.status);
      await response.body?.cancel().catch(() => undefined);
      if (code === 'rate_limited') {
        const header = Number(response.headers.get('retry-after'));
        const retryAfterS = Math.min(Number.isFinite(header) && header > 0 ? header : 30, MAX_RETRY_AFTER_S);
        breaker.holdUntil(clock() + retryAfterS * 1000);
        options.onRequest?.(operation, code);
        throw new DiditError(code, response.status, retryAfterS);
      }
      // 4xx other than 429 is our request's fault, not Didit's health: it does not trip the breaker.
      if (code === 'server' || code === 'bad_response') breaker.failure(clock());
      else breaker.success();
      options.onRequest?.(operation, code);
      throw new DiditError(code, response.status);
    }
    let parsed: T;
    try {
      const text = await response.text();
      if (text.length > 1_000_000) throw new Error('too large');
      parsed = schema.parse(JSON.parse(text));
    } catch {
      breaker.failure(clock());
      options.onRequest?.(operation, 'bad_response');
      throw new DiditError('bad_response', response.status);
    }
    breaker.success();
    options.onRequest?.(operation, 'ok');
    return parsed;
  }

  return {
    workflows: options.workflows,
    createSession(request) {
      const body = {
        workflow_id: request.workflowId,
        vendor_data: request.vendorData,
        metadata: request.metadata,
        ...(request.callback ? { callback: request.callback } : {}),
        ...(request.portraitImage ? { portrait_image: request.portraitImage } : {}),
      };
      // No retry here: the POST is not idempotent and bytes may have reached Didit.
      return call(
        'create_session',
        '/v3/session/',
        { method: 'POST', body: JSON.stringify(body) },
        createSessionResponse,
        201,
      );
    },
    getDecision(sessionId) {
      // Only an id of Didit's shape goes into the path: nothing else can reach another endpoint.
      if (!DIDIT_ID.test(sessionId)) return Promise.reject(new DiditError('bad_request', undefined));
      return call('get_decision', `/v3/session/${sessionId}/decision/`, { method: 'GET' }, decisionResponse, 200);
    },
    circuitOpen: () => breaker.isOpen(clock()),
  };
}
