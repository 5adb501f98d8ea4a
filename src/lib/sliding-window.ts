/**
 * Appends an event in place and drops, from the front, what left the window (events older than
 * `windowMs` before `now`) and what exceeds `cap`. Events arrive in time order, so the front is the
 * oldest; a clock that stepped back (tests, NTP) re-sorts instead of breaking that order.
 */
export function pushWindow<T>(
  events: T[],
  event: T,
  at: (event: T) => number,
  windowMs: number,
  now: number,
  cap: number,
): T[] {
  events.push(event);
  if (events.length > 1 && at(events[events.length - 2]!) > at(event)) events.sort((a, b) => at(a) - at(b));
  let drop = 0;
  while (drop < events.length && at(events[drop]!) <= now - windowMs) drop++;
  if (events.length - drop > cap) drop = events.length - cap;
  if (drop > 0) events.splice(0, drop);
  return events;
}

export const timestamp = (t: number): number => t;
