// The switch to polling and back, with pusher-js on fake sockets and a fake history route: the
// same handlers and composable API, the status "polling", every event once, and never both the
// socket and the polling at once.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ClarionClient } from '../../src/client'
import { FakeSocket, fakeOptions, useFakeSockets } from './fake-socket'

let restore: () => void
let client: ClarionClient | undefined

/** The app backend's /broadcasting/history, over an in-memory history. */
class FakeHistory {
  readonly frames: Array<Record<string, unknown>> = []
  readonly requests: URL[] = []
  failing = false
  /** While set, reads wait for it. */
  hold: Promise<void> | undefined

  publish(n: number): Record<string, unknown> {
    const frame = { event: 'e', channel: 'private-a', data: JSON.stringify({ n }), epoch: 'E', serial: this.frames.length + 1 }
    this.frames.push(frame)
    return frame
  }

  fetch = async (input: RequestInfo | URL): Promise<Response> => {
    const url = new URL(String(input))
    this.requests.push(url)
    if (this.hold !== undefined) await this.hold
    if (this.failing) return new Response(JSON.stringify({ error: 'down' }), { status: 503 })
    const since = url.searchParams.get('since')
    const limit = Number(url.searchParams.get('limit') ?? 100)
    let events = since === null ? this.frames.slice(-limit) : this.frames.filter((f) => (f.serial as number) > Number(since))
    events = events.slice(0, limit)
    const body = { channel: 'private-a', epoch: 'E', serial: this.frames.length, recovered: true, events }
    return new Response(JSON.stringify(body), { status: 200, headers: { 'Content-Type': 'application/json' } })
  }
}

let history: FakeHistory

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
  vi.spyOn(Math, 'random').mockReturnValue(0)
  restore = useFakeSockets()
  history = new FakeHistory()
  vi.stubGlobal('fetch', history.fetch)
})

afterEach(() => {
  client?.dispose()
  client = undefined
  restore()
  vi.unstubAllGlobals()
  vi.restoreAllMocks()
  vi.useRealTimers()
})

const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await vi.advanceTimersByTimeAsync(0)
}

function start() {
  client = new ClarionClient(
    fakeOptions({
      backoff: { base: 1000, cap: 4000, retryJitter: 0 },
      fallback: { after: 2, interval: 1000, historyEndpoint: 'http://127.0.0.1/broadcasting/history' },
    }) as never,
  )
  const got: number[] = []
  client.echo.private('a').listen('.e', (payload: { n: number }) => got.push(payload.n))
  return { c: client, got }
}

async function failAttempt(): Promise<void> {
  await settle()
  FakeSocket.last.refuse()
  await settle()
}

describe('polling fallback', () => {
  it('after the configured number of failed attempts, polls history with the same handlers; then switches back', async () => {
    const { c, got } = start()
    history.publish(0) // before the subscription: not delivered
    await failAttempt()
    expect(c.status()).toBe('connecting')
    await vi.advanceTimersByTimeAsync(500)
    await failAttempt()
    expect(c.status()).toBe('polling')
    expect(c.state.subscriptions['private-a']?.status).toBe('polling')
    await settle()
    // The first read only learns where the channel stands.
    expect(history.requests[0]?.searchParams.get('limit')).toBe('1')
    expect(history.requests[0]?.searchParams.get('channel_name')).toBe('private-a')

    history.publish(1)
    history.publish(2)
    await vi.advanceTimersByTimeAsync(1000)
    await settle()
    expect(got).toEqual([1, 2])
    const asked = history.requests.at(-1)!
    expect([asked.searchParams.get('epoch'), asked.searchParams.get('since')]).toEqual(['E', '1'])

    // Meanwhile the backoff keeps probing WebSockets, one attempt at a time.
    history.publish(3)
    FakeSocket.last.refuse()
    await settle()
    await vi.advanceTimersByTimeAsync(1000)
    await settle()
    expect(got).toEqual([1, 2, 3])
    expect(FakeSocket.open().length).toBe(1)
    const probe = FakeSocket.last
    probe.accept('9.9')
    await settle()
    expect(c.status()).toBe('connected')
    expect(c.state.transport).toBe('websocket')
    // Resumes from where polling got to; the replay's duplicate is dropped.
    expect(probe.subscribes()[0]).toMatchObject({ channel: 'private-a', resume: { epoch: 'E', serial: 4 } })
    const pollsAtSwitch = history.requests.length
    probe.succeed('private-a')
    probe.event('private-a', 'e', { n: 3 }, { epoch: 'E', serial: 4 }, true)
    probe.event('private-a', 'e', { n: 4 }, { epoch: 'E', serial: 5 }, true)
    probe.resumed('private-a', { recovered: true, epoch: 'E', serial: 5 })
    await settle()
    expect(got).toEqual([1, 2, 3, 4])
    // Never both: no polling once the socket is back.
    await vi.advanceTimersByTimeAsync(10_000)
    expect(history.requests.length).toBe(pollsAtSwitch)
    expect(c.state.telemetry.polls).toBeGreaterThan(2)
  })

  it('a subscription dropped before its probe was answered resyncs once polling finds events in the channel', async () => {
    const { c, got } = start()
    const resyncs: string[] = []
    c.bus.on('resync', (info) => resyncs.push(info.reason))
    await settle()
    FakeSocket.last.accept('1.1')
    await settle()
    FakeSocket.last.succeed('private-a') // the probe's answer never comes: the socket drops first
    FakeSocket.last.drop(1006)
    history.publish(1) // while it was away
    await settle()
    await vi.advanceTimersByTimeAsync(500)
    await failAttempt()
    await vi.advanceTimersByTimeAsync(1000)
    await failAttempt()
    expect(c.status()).toBe('polling')
    await settle()
    expect(resyncs).toEqual(['unknown_position'])
    history.publish(2)
    await vi.advanceTimersByTimeAsync(1000)
    await settle()
    expect(got).toEqual([2])
  })

  it('a poll answered after the switch back is ignored', async () => {
    const { c, got } = start()
    await failAttempt()
    await vi.advanceTimersByTimeAsync(500)
    await failAttempt()
    await settle()
    expect(c.status()).toBe('polling')
    // The next read hangs until after the socket is back.
    let release: (() => void) | undefined
    history.hold = new Promise<void>((r) => (release = r))
    history.publish(1)
    await vi.advanceTimersByTimeAsync(1000)
    await settle()
    expect(release).toBeDefined()
    FakeSocket.last.accept()
    await settle()
    expect(c.status()).toBe('connected')
    history.hold = undefined
    release?.()
    await settle()
    expect(got).toEqual([])
  })

  it('failing reads are reported, counted, and polling goes on', async () => {
    const { c } = start()
    history.failing = true
    await failAttempt()
    await vi.advanceTimersByTimeAsync(500)
    await failAttempt()
    await vi.advanceTimersByTimeAsync(3000)
    await settle()
    expect(c.status()).toBe('polling')
    expect(c.state.telemetry.pollErrors).toBeGreaterThan(0)
    expect(c.state.lastError?.message).toMatch(/503/)
  })
})
