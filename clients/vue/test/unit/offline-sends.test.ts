// Whispers made while disconnected, through the whole client on fake sockets: queued, sent once the
// channel is subscribed again, and, past the queue's bounds, dropped with an error the app sees.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ClarionClient } from '../../src/client'
import { FakeSocket, fakeOptions, useFakeSockets } from './fake-socket'

let restore: () => void
let client: ClarionClient | undefined

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
  vi.spyOn(Math, 'random').mockReturnValue(0)
  restore = useFakeSockets()
})

afterEach(() => {
  client?.dispose()
  client = undefined
  restore()
  vi.restoreAllMocks()
  vi.useRealTimers()
})

const settle = (): Promise<void> => vi.advanceTimersByTimeAsync(0).then(() => undefined)

async function setup(offlineQueue: { maxSize: number; maxAge: number }) {
  client = new ClarionClient(fakeOptions({ backoff: { base: 1000, cap: 8000, retryJitter: 0 }, fallback: false, offlineQueue }) as never)
  const dropped: string[] = []
  client.bus.on('dropped', (d) => dropped.push(`${d.event}:${d.reason}`))
  const channel = client.echo.private('chat') as unknown as { whisper: (e: string, d: unknown) => void }
  await settle()
  FakeSocket.last.accept()
  await settle()
  FakeSocket.last.succeed('private-chat')
  await settle()
  return { c: client, channel, dropped }
}

describe('offline sends', () => {
  it('are queued while disconnected and sent, in order, once the channel is subscribed again', async () => {
    const { c, channel } = await setup({ maxSize: 10, maxAge: 30_000 })
    FakeSocket.last.drop(1006)
    await settle()
    channel.whisper('typing', { n: 1 })
    channel.whisper('typing', { n: 2 })
    expect(c.state.telemetry.queued).toBe(2)
    await vi.advanceTimersByTimeAsync(500)
    const socket = FakeSocket.last
    socket.accept()
    await settle()
    expect(socket.sentOf('client-typing')).toEqual([]) // not before the channel is back
    socket.succeed('private-chat')
    await settle()
    expect(socket.sentOf('client-typing').map((f) => f.data)).toEqual([{ n: 1 }, { n: 2 }])
    expect(c.state.telemetry.flushed).toBe(2)
  })

  it('past the size bound, the oldest is dropped: the bus, lastError and the telemetry say so', async () => {
    const { c, channel, dropped } = await setup({ maxSize: 2, maxAge: 30_000 })
    FakeSocket.last.drop(1006)
    await settle()
    for (const n of [1, 2, 3]) channel.whisper('typing', { n })
    expect(dropped).toEqual(['client-typing:overflow'])
    expect(c.state.telemetry.dropped).toBe(1)
    expect(c.state.lastError?.message).toMatch(/dropped the client event client-typing on private-chat \(overflow\)/)
  })

  it('past the age bound, a whisper is dropped rather than sent late', async () => {
    const { c, channel, dropped } = await setup({ maxSize: 10, maxAge: 2000 })
    FakeSocket.last.drop(4100)
    await settle()
    channel.whisper('typing', { n: 1 })
    await vi.advanceTimersByTimeAsync(3000) // the retry comes after the whisper grew too old
    const socket = FakeSocket.last
    socket.accept()
    await settle()
    socket.succeed('private-chat')
    await settle()
    expect(socket.sentOf('client-typing')).toEqual([])
    expect(dropped).toEqual(['client-typing:expired'])
    expect(c.state.telemetry.dropped).toBe(1)
  })
})
