/** Moved to lib/: the outgoing events share it. Kept so existing imports keep working. */
export { createBreaker, type Breaker } from '../lib/breaker.js';
