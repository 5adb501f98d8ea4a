/**
 * A small circuit breaker: after `threshold` consecutive failures it opens for `cooldownMs` and
 * sends nothing; then one trial call (half-open) decides. A 429's Retry-After opens it until then.
 */
export interface Breaker {
  /** True when a call may be sent now (a half-open trial counts as one). */
  allow(now: number): boolean;
  success(): void;
  failure(now: number): void;
  /** Hold every call until `until` (epoch ms), as Retry-After asks. */
  holdUntil(until: number): void;
  /** True while calls are refused (open and cooling down, or a half-open trial is in flight). */
  isOpen(now: number): boolean;
}

export function createBreaker(
  options: { threshold?: number; cooldownMs?: number; onChange?: (open: boolean) => void } = {},
): Breaker {
  const threshold = options.threshold ?? 5;
  const cooldownMs = options.cooldownMs ?? 30_000;
  let failures = 0;
  let openUntil = 0;
  let trialInFlight = false;
  let open = false;
  const setOpen = (value: boolean) => {
    if (value !== open) {
      open = value;
      options.onChange?.(value);
    }
  };
  return {
    allow(now) {
      if (now < openUntil) return false;
      if (open) {
        if (trialInFlight) return false;
        trialInFlight = true;
      }
      return true;
    },
    success() {
      failures = 0;
      trialInFlight = false;
      openUntil = 0;
      setOpen(false);
    },
    failure(now) {
      failures += 1;
      trialInFlight = false;
      if (open || failures >= threshold) {
        openUntil = now + cooldownMs;
        setOpen(true);
      }
    },
    holdUntil(until) {
      openUntil = Math.max(openUntil, until);
      trialInFlight = false;
      setOpen(true);
    },
    isOpen(now) {
      return now < openUntil || (open && trialInFlight);
    },
  };
}
