// Retry delays shared by the websocket and every camera's session: doubling from BACKOFF_MIN_MS up to
// BACKOFF_MAX_MS, with jitter.

const BACKOFF_MIN_MS = 500;
// A daemon that is down for minutes is still noticed within this long of coming back.
const BACKOFF_MAX_MS = 10000;

/** The delay before retry number `attempt` (0 for the first). */
export function backoff(attempt) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  // Jitter, so pages reconnecting to a restarted daemon don't arrive in lockstep.
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}
