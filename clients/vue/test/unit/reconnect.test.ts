// The reconnect schedule of the client, with pusher-js on fake sockets and fake timers: the
// client's own backoff (and nothing of pusher-js's fixed delays), the close-code classes, and the
// browser's online/offline/visibility signals.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ClarionClient } from '../../src/client'
import { FakeSocket, fakeOptions, useFakeSockets } from './fake-socket'

let restore: () => void
let client: ClarionClient | undefined

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
  restore = useFakeSockets()
})

afterEach(() => {
  client?.dispose()
  client = undefined
  restore()
  vi.restoreAllMocks()
  vi.useRealTimers()
})

const BACKOFF = { base: 1000, cap: 8000, retryJitter: 500 }

function start(extra: Record<string, unknown> = {}): ClarionClient {
  client = new ClarionClient(fakeOptions({ backoff: BACKOFF, fallback: false, ...extra }) as never)
  return client
}

async function settle(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0)
}

/** Advances to just before ``ms`` and checks no new socket opened, then past it and checks one did. */
async function expectAttemptAfter(ms: number): Promise<FakeSocket> {
  const before = FakeSocket.all.length
  await vi.advanceTimersByTimeAsync(ms - 1)
  expect(FakeSocket.all.length, `no attempt before ${ms} ms`).toBe(before)
  await vi.advanceTimersByTimeAsync(2)
  expect(FakeSocket.all.length, `an attempt at ${ms} ms`).toBe(before + 1)
  return FakeSocket.last
}

describe('reconnect schedule', () => {
  it('retries a dead server on its own backoff: delays grow to the cap, each within its jitter window', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5)
    const c = start()
    await settle()
    expect(FakeSocket.all.length).toBe(1)
    expect(c.status()).toBe('connecting')
    FakeSocket.last.refuse()
    await settle()
    // attempt n waits base/2 + 0.5·(min(cap, base·2^n) − base/2)
    for (const delay of [750, 1250, 2250, 4250, 4250, 4250]) {
      const socket = await expectAttemptAfter(delay)
      socket.refuse()
      await settle()
    }
    expect(c.state.telemetry.delays).toEqual([750, 1250, 2250, 4250, 4250, 4250, 4250])
    expect(c.state.attempt).toBe(7)
    expect(c.status()).toBe('connecting') // never connected yet
  })

  it('keeps every delay inside [base/2, ceiling] for any draw of the jitter', async () => {
    const draws = [0, 0.999999, 0.25, 0, 0.999999, 0.75]
    let i = 0
    vi.spyOn(Math, 'random').mockImplementation(() => draws[i++ % draws.length]!)
    const c = start()
    await settle()
    FakeSocket.last.refuse()
    await settle()
    for (let attempt = 0; attempt < 6; attempt++) {
      const delay = c.state.telemetry.delays[attempt]!
      const ceiling = Math.min(8000, 1000 * 2 ** attempt)
      expect(delay).toBeGreaterThanOrEqual(500)
      expect(delay).toBeLessThanOrEqual(ceiling)
      await vi.advanceTimersByTimeAsync(Math.ceil(delay) + 1)
      FakeSocket.last.refuse()
      await settle()
    }
    expect(c.state.telemetry.delays.slice(0, 2)).toEqual([500, 500 + 0.999999 * 1500])
  })

  it('pusher-js never retries by itself: nothing opens between the client’s attempts', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(1)
    start({ backoff: { base: 1000, cap: 60_000, retryJitter: 500 } })
    await settle()
    FakeSocket.last.refuse()
    await settle()
    // The client waits 1 s, 2 s, 4 s, 8 s; pusher-js alone would have retried on its own timers.
    const opened: number[] = []
    FakeSocket.onCreate = () => opened.push(Date.now())
    const t0 = Date.now()
    for (let k = 0; k < 4; k++) {
      await vi.advanceTimersByTimeAsync(1000 * 2 ** k)
      FakeSocket.last.refuse()
      await settle()
    }
    expect(opened.map((t) => t - t0)).toEqual([1000, 3000, 7000, 15_000])
  })

  it('abandons an attempt that hangs past attemptTimeout and backs off', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0)
    const c = start({ attemptTimeout: 3000 })
    await settle()
    expect(FakeSocket.all.length).toBe(1)
    await vi.advanceTimersByTimeAsync(3000)
    expect(c.state.telemetry.failures).toBe(1)
    await expectAttemptAfter(500)
  })

  it('after a drop of a stable connection, starts again from the first step, and reports "reconnecting"', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5)
    const c = start()
    await settle()
    FakeSocket.last.accept('1.1')
    await settle()
    expect(c.status()).toBe('connected')
    expect(c.socketId()).toBe('1.1')
    await vi.advanceTimersByTimeAsync(10_000)
    FakeSocket.last.drop(1006)
    await settle()
    expect(c.status()).toBe('reconnecting')
    expect(c.socketId()).toBeUndefined()
    const socket = await expectAttemptAfter(750)
    socket.accept('2.1')
    await settle()
    expect(c.status()).toBe('connected')
    expect(c.state.telemetry.connects).toBe(2)
  })

  it('a connection that keeps dropping at once keeps climbing the backoff', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(1)
    const c = start()
    await settle()
    for (const delay of [1000, 2000, 4000]) {
      FakeSocket.last.accept()
      await settle()
      FakeSocket.last.drop(4100, 'Over capacity')
      await settle()
      await expectAttemptAfter(delay)
    }
    expect(c.state.telemetry.lastCloseCode).toBe(4100)
  })
})

describe('a silent server', () => {
  it('a pong that never comes counts as a drop: pusher-js pings, then the client reconnects on its backoff', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0)
    const c = start()
    await settle()
    FakeSocket.last.accept()
    await settle()
    const first = FakeSocket.last
    await vi.advanceTimersByTimeAsync(121_000) // the server's activity_timeout (120 s) of silence
    expect(first.sentOf('pusher:ping').length).toBe(1)
    expect(c.status()).toBe('connected')
    await vi.advanceTimersByTimeAsync(29_000) // pusher-js's pongTimeout: 30 s after the ping
    expect(c.status()).toBe('reconnecting')
    expect(first.readyState).toBe(3)
    await expectAttemptAfter(500)
    expect(FakeSocket.all.length).toBe(2)
  })
})

describe('close codes', () => {
  it('4000–4099: refused, no retry at all (status failed)', async () => {
    const c = start()
    await settle()
    FakeSocket.last.accept()
    await settle()
    FakeSocket.last.drop(4001, 'App does not exist')
    await settle()
    expect(c.status()).toBe('failed')
    await vi.advanceTimersByTimeAsync(600_000)
    expect(FakeSocket.all.length).toBe(1)
    expect(c.state.lastError?.code).toBe(4001)
  })

  it('4100–4199: backs off', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0)
    const c = start()
    await settle()
    FakeSocket.last.accept()
    await settle()
    FakeSocket.last.drop(4100, 'Over capacity')
    await settle()
    expect(c.status()).toBe('reconnecting')
    await expectAttemptAfter(500)
  })

  it('4200–4299: retries at once, within the small jitter', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5)
    start()
    await settle()
    FakeSocket.last.accept()
    await settle()
    FakeSocket.last.drop(4200, 'Server shutting down')
    await settle()
    await expectAttemptAfter(250) // 0.5 · retryJitter (500)
  })

  it('4200 with the jitter at its bounds: from 0 up to retryJitter', async () => {
    const c = start()
    for (const draw of [0, 0.999]) {
      vi.spyOn(Math, 'random').mockReturnValue(draw)
      await settle()
      FakeSocket.last.accept()
      await settle()
      FakeSocket.last.drop(4201)
      await settle()
      const delay = c.state.telemetry.delays.at(-1)!
      expect(delay).toBeGreaterThanOrEqual(0)
      expect(delay).toBeLessThan(500)
      await vi.advanceTimersByTimeAsync(Math.ceil(delay) + 1)
    }
  })
})

describe('browser signals', () => {
  it('offline holds the retries; online retries at once', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(1)
    start()
    await settle()
    FakeSocket.last.refuse()
    await settle()
    window.dispatchEvent(new Event('offline'))
    await vi.advanceTimersByTimeAsync(60_000)
    expect(FakeSocket.all.length).toBe(1)
    window.dispatchEvent(new Event('online'))
    await settle()
    expect(FakeSocket.all.length).toBe(2)
  })

  it('a page becoming visible retries at once instead of waiting out the backoff', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(1)
    start({ backoff: { base: 10_000, cap: 30_000, retryJitter: 500 } })
    await settle()
    FakeSocket.last.refuse()
    await settle()
    await vi.advanceTimersByTimeAsync(100)
    expect(FakeSocket.all.length).toBe(1)
    document.dispatchEvent(new Event('visibilitychange'))
    await settle()
    expect(FakeSocket.all.length).toBe(2)
  })
})
