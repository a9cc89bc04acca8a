import { describe, expect, it } from 'vitest'
import { backoffCeiling, backoffDelay, classifyClose, retryNowDelay, validateBackoff, DEFAULT_BACKOFF } from '../../src/backoff'

const options = { base: 1000, cap: 30_000, retryJitter: 1000 }

describe('backoff with full jitter', () => {
  it('doubles the ceiling per attempt up to the cap', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 60].map((n) => backoffCeiling(n, options))).toEqual([
      1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000,
    ])
  })

  it('draws each delay between half the base and the attempt ceiling, both bounds reachable', () => {
    for (let attempt = 0; attempt < 8; attempt++) {
      expect(backoffDelay(attempt, options, () => 0)).toBe(500)
      expect(backoffDelay(attempt, options, () => 1)).toBe(backoffCeiling(attempt, options))
    }
  })

  it('spreads many clients across the whole window rather than retrying in lockstep', () => {
    const samples = Array.from({ length: 2000 }, () => backoffDelay(3, options))
    expect(Math.min(...samples)).toBeGreaterThanOrEqual(500)
    expect(Math.max(...samples)).toBeLessThanOrEqual(8000)
    // Uniform over [500, 8000]: each quarter of the window gets a fair share.
    const quarters = [0, 0, 0, 0]
    for (const s of samples) quarters[Math.min(3, Math.floor(((s - 500) / 7500) * 4))]! += 1
    for (const q of quarters) expect(q).toBeGreaterThan(350)
  })

  it('retries "now" within the small jitter only', () => {
    expect(retryNowDelay(options, () => 0)).toBe(0)
    expect(retryNowDelay(options, () => 0.999)).toBeLessThan(1000)
  })

  it('defaults to a 1 s base (first retry 0.5–1 s) and a 30 s cap', () => {
    expect(DEFAULT_BACKOFF).toMatchObject({ base: 1000, cap: 30_000 })
  })

  it('refuses settings that would hammer a server or never retry', () => {
    expect(() => validateBackoff({ base: 0, cap: 1000, retryJitter: 0 })).toThrow(/base/)
    expect(() => validateBackoff({ base: 1000, cap: 500, retryJitter: 0 })).toThrow(/cap/)
    expect(() => validateBackoff({ base: 1000, cap: 5000, retryJitter: -1 })).toThrow(/retryJitter/)
  })
})

describe('close codes', () => {
  it.each([
    [4000, 'tls'],
    [4001, 'refused'],
    [4009, 'refused'],
    [4099, 'refused'],
    [4100, 'backoff'],
    [4199, 'backoff'],
    [4200, 'now'],
    [4201, 'now'],
    [4299, 'now'],
    [4301, 'refused'],
    [1006, 'backoff'],
    [1000, 'backoff'],
    [undefined, 'backoff'],
  ])('%s is %s', (code, kind) => {
    expect(classifyClose(code)).toBe(kind)
  })
})
