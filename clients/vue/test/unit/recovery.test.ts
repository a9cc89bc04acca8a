// Resume bookkeeping and duplicate dropping, with pusher-js on fake sockets: what the client asks
// for when it (re)subscribes, what it delivers from the replay, and when the app must resync.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ClarionClient } from '../../src/client'
import type { ResyncInfo } from '../../src/types'
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

async function connected(socketId = `${FakeSocket.all.length}.1`): Promise<FakeSocket> {
  await settle()
  const socket = FakeSocket.last
  socket.accept(socketId)
  await settle()
  return socket
}

async function reconnect(): Promise<FakeSocket> {
  FakeSocket.last.drop(1006)
  await settle()
  await vi.advanceTimersByTimeAsync(500) // random() is 0: the backoff's floor
  return connected()
}

function setup(extra: Record<string, unknown> = {}) {
  const resyncs: ResyncInfo[] = []
  client = new ClarionClient(
    fakeOptions({ backoff: { base: 1000, cap: 8000, retryJitter: 0 }, fallback: false, onResync: (i: ResyncInfo) => resyncs.push(i), ...extra }) as never,
  )
  const got: number[] = []
  const bus: string[] = []
  client.bus.on('resync', (info) => bus.push(info.reason))
  client.echo.private('a').listen('.e', (payload: { n: number }) => got.push(payload.n))
  return { c: client, got, resyncs, bus }
}

describe('resume bookkeeping', () => {
  it('a fresh subscription asks where the channel stands; that answer is no resync', async () => {
    const { c, resyncs } = setup()
    const socket = await connected()
    expect(socket.subscribes()).toEqual([{ channel: 'private-a', auth: expect.any(String), resume: { epoch: '-', serial: 0 } }])
    socket.succeed('private-a')
    socket.resumed('private-a', { recovered: false, epoch: 'E', serial: 10, reason: 'epoch_changed' })
    await settle()
    expect(resyncs).toEqual([])
    expect(c.state.subscriptions['private-a']).toMatchObject({ status: 'subscribed', epoch: 'E', serial: 10, wasRecovering: false })
  })

  it('after a reconnect, resumes from the last delivered position; the replay reaches the same handlers once, in order', async () => {
    const { c, got, resyncs } = setup()
    let socket = await connected()
    socket.succeed('private-a')
    socket.resumed('private-a', { recovered: false, epoch: 'E', serial: 10, reason: 'epoch_changed' })
    socket.event('private-a', 'e', { n: 11 }, { epoch: 'E', serial: 11 })
    socket.event('private-a', 'e', { n: 12 }, { epoch: 'E', serial: 12 })
    socket.event('private-a', 'e', { n: 12 }, { epoch: 'E', serial: 12 }) // a duplicate
    await settle()
    expect(got).toEqual([11, 12])
    expect(c.state.telemetry.duplicates).toBe(1)

    socket = await reconnect()
    expect(socket.subscribes()[0]).toMatchObject({ channel: 'private-a', resume: { epoch: 'E', serial: 12 } })
    socket.succeed('private-a')
    socket.event('private-a', 'e', { n: 12 }, { epoch: 'E', serial: 12 }, true) // already delivered
    socket.event('private-a', 'e', { n: 13 }, { epoch: 'E', serial: 13 }, true)
    socket.event('private-a', 'e', { n: 14 }, { epoch: 'E', serial: 14 }, true)
    socket.resumed('private-a', { recovered: true, epoch: 'E', serial: 14 })
    socket.event('private-a', 'e', { n: 15 }, { epoch: 'E', serial: 15 })
    await settle()
    expect(got).toEqual([11, 12, 13, 14, 15])
    expect(resyncs).toEqual([])
    expect(c.state.subscriptions['private-a']).toMatchObject({ wasRecovering: true, recovered: true, serial: 15 })
    expect(c.state.telemetry.recoveries).toBe(1)
    expect(c.state.telemetry.duplicates).toBe(2)
  })

  it('recovered: false calls onResync and emits resync, and continues from the server’s position', async () => {
    const { c, got, resyncs, bus } = setup()
    let socket = await connected()
    socket.succeed('private-a')
    socket.event('private-a', 'e', { n: 1 }, { epoch: 'E', serial: 1 })
    socket = await reconnect()
    socket.succeed('private-a')
    socket.resumed('private-a', { recovered: false, epoch: 'F', serial: 40, reason: 'too_old' })
    socket.event('private-a', 'e', { n: 41 }, { epoch: 'F', serial: 41 })
    await settle()
    expect(resyncs).toEqual([{ channel: 'private-a', reason: 'too_old', epoch: 'F', serial: 40 }])
    expect(bus).toEqual(['too_old'])
    expect(got).toEqual([1, 41])
    expect(c.state.subscriptions['private-a']).toMatchObject({ wasRecovering: true, recovered: false, epoch: 'F', serial: 41 })
  })

  it('a gap in live serials is a resync (something was lost), and a later event still arrives', async () => {
    const { got, resyncs } = setup()
    const socket = await connected()
    socket.succeed('private-a')
    socket.event('private-a', 'e', { n: 1 }, { epoch: 'E', serial: 1 })
    socket.event('private-a', 'e', { n: 3 }, { epoch: 'E', serial: 3 })
    await settle()
    expect(got).toEqual([1, 3])
    expect(resyncs).toEqual([{ channel: 'private-a', reason: 'gap', epoch: 'E', serial: 1 }])
  })

  it('a channel without history is not asked again after the server said so', async () => {
    const { resyncs } = setup()
    let socket = await connected()
    socket.succeed('private-a')
    socket.resumed('private-a', { recovered: false, epoch: null, serial: 0, reason: 'history_off' })
    socket = await reconnect()
    expect(socket.subscribes()).toEqual([{ channel: 'private-a', auth: expect.any(String) }])
    expect(resyncs).toEqual([])
  })

  it('a channel known empty is filled on reconnect with a rewind; a short fill is a resync', async () => {
    const { got, resyncs } = setup()
    let socket = await connected()
    socket.succeed('private-a')
    socket.resumed('private-a', { recovered: false, epoch: null, serial: 0, reason: 'epoch_changed' })
    socket = await reconnect()
    expect(socket.subscribes()[0]).toMatchObject({ rewind: { count: 100 } })
    socket.succeed('private-a')
    socket.event('private-a', 'e', { n: 1 }, { epoch: 'N', serial: 1 }, true)
    socket.event('private-a', 'e', { n: 2 }, { epoch: 'N', serial: 2 }, true)
    socket.frame({ event: 'clarion:rewound', channel: 'private-a', data: JSON.stringify({ channel: 'private-a', count: 2, epoch: 'N', serial: 2 }) })
    await settle()
    expect(got).toEqual([1, 2])
    expect(resyncs).toEqual([])
  })

  it('a subscription dropped before its probe was answered resyncs if the channel has events by the next answer', async () => {
    const { c, got, resyncs } = setup()
    let socket = await connected()
    socket.succeed('private-a') // the probe's answer never comes: the socket drops first
    socket = await reconnect()
    expect(socket.subscribes()[0]).toMatchObject({ resume: { epoch: '-', serial: 0 } })
    socket.succeed('private-a')
    // Three events were published while it was away; whether it had seen any cannot be known.
    socket.resumed('private-a', { recovered: false, epoch: 'E', serial: 3, reason: 'epoch_changed' })
    await settle()
    expect(resyncs).toEqual([{ channel: 'private-a', reason: 'unknown_position', epoch: 'E', serial: 3 }])
    expect(c.state.subscriptions['private-a']).toMatchObject({ epoch: 'E', serial: 3, wasRecovering: true, recovered: false })
    socket.event('private-a', 'e', { n: 4 }, { epoch: 'E', serial: 4 })
    await settle()
    expect(got).toEqual([4])
    expect(resyncs).toHaveLength(1)
  })

  it('a subscription dropped before its probe was answered needs no resync if the channel is still empty', async () => {
    const { resyncs } = setup()
    let socket = await connected()
    socket.succeed('private-a')
    socket = await reconnect()
    socket.succeed('private-a')
    socket.resumed('private-a', { recovered: false, epoch: null, serial: 0, reason: 'epoch_changed' })
    await settle()
    expect(resyncs).toEqual([])
  })

  it('a probe refused for its rate leaves the position unknown: no fill, no resync, a fresh probe next time', async () => {
    const { resyncs } = setup()
    let socket = await connected()
    socket.succeed('private-a')
    socket.resumed('private-a', { recovered: false, epoch: null, serial: 0, reason: 'rate_limited' })
    socket = await reconnect()
    expect(socket.subscribes()[0]).toMatchObject({ resume: { epoch: '-', serial: 0 } })
    expect(resyncs).toEqual([])
  })

  it('with recovery off, nothing is asked on subscribe or resubscribe', async () => {
    setup({ recovery: false })
    let socket = await connected()
    expect(socket.subscribes()).toEqual([{ channel: 'private-a', auth: expect.any(String) }])
    socket.succeed('private-a')
    socket.event('private-a', 'e', { n: 1 }, { epoch: 'E', serial: 1 })
    socket = await reconnect()
    expect(socket.subscribes()).toEqual([{ channel: 'private-a', auth: expect.any(String) }])
  })

  it('late joiners get recent history when the app asks for a rewind on that prefix', async () => {
    setup({ rewind: { 'private-': { count: 5 } } })
    const socket = await connected()
    expect(socket.subscribes()[0]).toMatchObject({ channel: 'private-a', rewind: { count: 5 } })
  })

  it('Clarion’s markers never reach the app’s callbacks', async () => {
    const { c } = setup()
    const seen: string[] = []
    ;(c.echo.private('a') as unknown as { listenToAll: (cb: (e: string) => void) => void }).listenToAll((e) => seen.push(e))
    const socket = await connected()
    socket.succeed('private-a')
    socket.resumed('private-a', { recovered: true, epoch: 'E', serial: 0 })
    socket.event('private-a', 'e', { n: 1 }, { epoch: 'E', serial: 1 })
    await settle()
    expect(seen).toEqual(['.e'])
  })
})
