/**
 * Polls `check` every 50 ms until it holds: the milliseconds it took, or -1 after `timeoutMs`.
 * Tests assert on the figure, so a slow machine shows as a number, not as a flaky sleep.
 */
export async function until(check: () => Promise<boolean>, timeoutMs = 5000): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if (await check()) return Date.now() - started;
    await new Promise((r) => setTimeout(r, 50));
  }
  return -1;
}
