/** Stable error codes, each mapped to an HTTP status once. Clients branch on `code`, never on `message`. */
export const ERROR_STATUS = {
  RISK_ERR_VALIDATION: 400,
  RISK_ERR_MALFORMED_BODY: 400,
  RISK_ERR_BAD_REQUEST: 400,
  RISK_ERR_BODY_TOO_DEEP: 400,
  RISK_ERR_UNAUTHORIZED: 401,
  RISK_ERR_BAD_SIGNATURE: 401,
  RISK_ERR_FORBIDDEN: 403,
  RISK_ERR_NOT_FOUND: 404,
  /** A decision id never made here, or older than DECISION_RECORD_TTL_DAYS. */
  RISK_ERR_UNKNOWN_DECISION: 404,
  RISK_ERR_REQUEST_TIMEOUT: 408,
  RISK_ERR_BODY_TOO_LARGE: 413,
  RISK_ERR_URI_TOO_LONG: 414,
  RISK_ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  RISK_ERR_RULE_TOO_EXPENSIVE: 422,
  RISK_ERR_RATE_LIMITED: 429,
  RISK_ERR_HEADERS_TOO_LARGE: 431,
  RISK_ERR_INTERNAL: 500,
  RISK_ERR_UNAVAILABLE: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class RiskError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  readonly field: string | undefined;

  constructor(code: ErrorCode, message: string, field?: string) {
    super(message);
    this.code = code;
    this.statusCode = ERROR_STATUS[code];
    this.field = field;
  }
}

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  field?: string;
}
