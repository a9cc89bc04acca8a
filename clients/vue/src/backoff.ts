// The reconnect schedule: exponential backoff with full jitter, and what each close code means.
// pusher-js retries after fixed delays (about 15 s, 30 s, then every 60 s against a dead server)
// with no jitter; this replaces it.

export interface BackoffOptions {
  /** Ceiling of the first delay, in ms; the floor of every backoff delay is half of it. */
  base: number
  /** Largest delay, in ms. */
  cap: number
  /** Upper bound of the delay before retrying after a 4200–4299 close ("reconnect now"), in ms. */
  retryJitter: number
}

export const DEFAULT_BACKOFF: BackoffOptions = { base: 1000, cap: 30_000, retryJitter: 1000 }

/** Checks the numbers once, at configuration, so a typo fails loudly rather than hammering a server. */
export function validateBackoff(options: BackoffOptions): BackoffOptions {
  const { base, cap, retryJitter } = options
  if (!(Number.isFinite(base) && base > 0)) throw new RangeError(`backoff.base must be a positive number of ms, not ${base}`)
  if (!(Number.isFinite(cap) && cap >= base)) throw new RangeError(`backoff.cap must be at least backoff.base, not ${cap}`)
  if (!(Number.isFinite(retryJitter) && retryJitter >= 0)) {
    throw new RangeError(`backoff.retryJitter must be 0 or more ms, not ${retryJitter}`)
  }
  return options
}

/** The ceiling of attempt ``attempt`` (0 for the first retry): base·2^attempt, at most cap. */
export function backoffCeiling(attempt: number, options: BackoffOptions): number {
  // 2**attempt overflows to Infinity long after min() has settled on cap; clamp the exponent anyway.
  return Math.min(options.cap, options.base * 2 ** Math.min(attempt, 52))
}

/**
 * The delay before retry ``attempt``: uniformly random between base/2 and the attempt's ceiling
 * ("full jitter" above a small floor, so a crowd of clients never retries in lockstep and none
 * retries in a tight loop).
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const ceiling = backoffCeiling(attempt, options)
  const floor = Math.min(options.base / 2, ceiling)
  return floor + random() * (ceiling - floor)
}

/** The delay after a close that asks for an immediate reconnect: small, so a restart is no thundering herd. */
export function retryNowDelay(options: BackoffOptions, random: () => number = Math.random): number {
  return random() * options.retryJitter
}

/**
 * What a close code asks of the client (Pusher protocol v7):
 * - ``refused``: 4000–4099, the same connection would be refused again (4000 asks for TLS);
 * - ``backoff``: 4100–4199 (over capacity and the like), 1002–1004, and every unexplained drop;
 * - ``now``: 4200–4299, the server asks for a reconnect at once (it is restarting, or a pong never came).
 */
export type CloseClass = 'refused' | 'tls' | 'backoff' | 'now'

export function classifyClose(code: number | undefined): CloseClass {
  if (code === undefined) return 'backoff'
  if (code === 4000) return 'tls'
  if (code >= 4000 && code < 4100) return 'refused'
  if (code >= 4100 && code < 4200) return 'backoff'
  if (code >= 4200 && code < 4300) return 'now'
  if (code >= 4300) return 'refused'
  return 'backoff'
}
