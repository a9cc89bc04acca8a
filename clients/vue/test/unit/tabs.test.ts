// One socket for all tabs: two clients in one process stand for two tabs of an origin, with a
// real BroadcastChannel (Node's) and an in-memory Web Locks manager (Node has none; the Chromium
// test uses the browser's). Leader election, relaying, whispers, and the hand-over on close.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ClarionClient } from '../../src/client'
import { FakeSocket, fakeOptions, useFakeSockets } from './fake-socket'

/** Web Locks' exclusive request(), enough for the election: granted in request order, released when the callback's promise settles. */
class FakeLocks {
  private readonly held = new Set<string>()
  private readonly waiting = new Map<string, Array<() => void>>()

  request(name: string, callback: () => Promise<void>): Promise<void> {
    return new Promise((resolve) => {
      const run = (): void => {
        this.held.add(name)
        void callback().finally(() => {
          this.held.delete(name)
          resolve()
          this.waiting.get(name)?.shift()?.()
        })
      }
      if (this.held.has(name)) {
        const queue = this.waiting.get(name) ?? []
        queue.push(run)
        this.waiting.set(name, queue)
      } else run()
    })
  }
}

let restore: () => void
const clients: ClarionClient[] = []

beforeEach(() => {
  vi.spyOn(Math, 'random').mockReturnValue(0)
  restore = useFakeSockets()
  vi.stubGlobal('navigator', { ...navigator, locks: new FakeLocks(), userAgent: navigator.userAgent })
  vi.stubGlobal('BroadcastChannel', globalThis.BroadcastChannel)
})

afterEach(() => {
  for (const c of clients.splice(0)) c.dispose()
  restore()
  vi.unstubAllGlobals()
  vi.restoreAllMocks()
})

const until = (check: () => boolean, what: string) => vi.waitFor(() => expect(check(), what).toBe(true), { timeout: 5000, interval: 5 })

describe('tab sharing', () => {
  it('elects one leader that holds the only socket; both tabs get every event of their channels', async () => {
    const name = `share-${Date.now()}`
    const options = { shareTabs: { name }, backoff: { base: 100, cap: 200, retryJitter: 0 } }
    const a = new ClarionClient(fakeOptions(options) as never)
    clients.push(a)
    const b = new ClarionClient(fakeOptions(options) as never)
    clients.push(b)
    await until(() => a.state.role === 'leader', 'a leads')
    expect(b.state.role).toBe('follower')
    await until(() => FakeSocket.all.length === 1, 'one socket')
    FakeSocket.last.accept('1.1')
    await until(() => b.state.status === 'connected', 'b sees the connection')
    expect(b.socketId()).toBe('1.1')

    const gotA: number[] = []
    const gotB: number[] = []
    const gotBb: number[] = []
    a.echo.private('a').listen('.e', (p: { n: number }) => gotA.push(p.n))
    b.echo.private('a').listen('.e', (p: { n: number }) => gotB.push(p.n))
    b.echo.private('b').listen('.f', (p: { n: number }) => gotBb.push(p.n))
    const socket = FakeSocket.last
    await until(() => socket.subscribes().length === 2, 'both channels subscribed once')
    expect(socket.subscribes().map((d) => d.channel).sort()).toEqual(['private-a', 'private-b'])
    socket.succeed('private-a')
    socket.succeed('private-b')
    await until(() => b.state.subscriptions['private-a']?.status === 'subscribed', 'b subscribed')
    socket.event('private-a', 'e', { n: 1 }, { epoch: 'E', serial: 1 })
    socket.event('private-b', 'f', { n: 1 }, { epoch: 'E', serial: 1 })
    await until(() => gotB.length === 1 && gotBb.length === 1, 'b got its events')
    expect(gotA).toEqual([1])
    expect(FakeSocket.all.length).toBe(1)

    // A whisper from the follower goes out on the leader's socket, and the leader tab (another client) hears it.
    const heard: unknown[] = []
    a.echo.private('a').listenForWhisper('typing', (p: unknown) => heard.push(p))
    ;(b.echo.private('a') as unknown as { whisper: (e: string, d: unknown) => void }).whisper('typing', { who: 'b' })
    await until(() => socket.sentOf('client-typing').length === 1, 'the whisper sent')
    await until(() => heard.length === 1, 'the leader tab heard it')

    // The follower leaves b: nobody needs it any more.
    b.echo.leaveChannel('private-b')
    await until(() => socket.sentOf('pusher:unsubscribe').length === 1, 'b left')
  })

  it('when the leader closes, the other tab takes over and resumes from its last position: nothing missed, nothing twice', async () => {
    const name = `handover-${Date.now()}`
    const options = { shareTabs: { name }, backoff: { base: 100, cap: 200, retryJitter: 0 } }
    const a = new ClarionClient(fakeOptions(options) as never)
    const b = new ClarionClient(fakeOptions(options) as never)
    clients.push(b)
    await until(() => a.state.role === 'leader' && FakeSocket.all.length === 1, 'a leads')
    FakeSocket.last.accept('1.1')
    const got: number[] = []
    b.echo.private('a').listen('.e', (p: { n: number }) => got.push(p.n))
    const first = FakeSocket.last
    await until(() => first.subscribes().length === 1, 'subscribed')
    first.succeed('private-a')
    first.event('private-a', 'e', { n: 1 }, { epoch: 'E', serial: 1 })
    first.event('private-a', 'e', { n: 2 }, { epoch: 'E', serial: 2 })
    await until(() => got.length === 2, 'b got 1 and 2')

    a.dispose() // the leader tab closes
    await until(() => b.state.role === 'leader', 'b takes over')
    await until(() => FakeSocket.all.length === 2, 'b opens the socket')
    expect(first.readyState).toBe(3)
    const second = FakeSocket.last
    second.accept('2.1')
    await until(() => second.subscribes().length === 1, 'b subscribes')
    expect(second.subscribes()[0]).toMatchObject({ channel: 'private-a', resume: { epoch: 'E', serial: 2 } })
    second.succeed('private-a')
    second.event('private-a', 'e', { n: 2 }, { epoch: 'E', serial: 2 }, true)
    second.event('private-a', 'e', { n: 3 }, { epoch: 'E', serial: 3 }, true)
    second.resumed('private-a', { recovered: true, epoch: 'E', serial: 3 })
    second.event('private-a', 'e', { n: 4 }, { epoch: 'E', serial: 4 })
    await until(() => got.length >= 4, 'b got the rest')
    expect(got).toEqual([1, 2, 3, 4])
    expect(b.status()).toBe('connected')
    expect(FakeSocket.open().length).toBe(1)
  })

  it('each tab keeps its own subscriptions and counts; a tab that goes lets go of its channels only', async () => {
    const name = `own-${Date.now()}`
    const options = { shareTabs: { name }, backoff: { base: 100, cap: 200, retryJitter: 0 } }
    const a = new ClarionClient(fakeOptions(options) as never)
    clients.push(a)
    const b = new ClarionClient(fakeOptions(options) as never)
    await until(() => a.state.role === 'leader' && FakeSocket.all.length === 1, 'a leads')
    const socket = FakeSocket.last
    socket.accept('1.1')
    a.join({ name: 'x', id: 'private-x', visibility: 'private' })
    b.join({ name: 'x', id: 'private-x', visibility: 'private' })
    b.join({ name: 'x', id: 'private-x', visibility: 'private' })
    b.join({ name: 'y', id: 'private-y', visibility: 'private' })
    await until(() => socket.subscribes().length === 2, 'x and y once each')
    expect(a.refs('private-x')).toBe(1)
    expect(b.refs('private-x')).toBe(2)
    socket.succeed('private-x')
    socket.succeed('private-y')
    b.dispose() // the follower tab closes
    await until(() => socket.sentOf('pusher:unsubscribe').length === 1, 'y released')
    expect((socket.sentOf('pusher:unsubscribe')[0]!.data as { channel: string }).channel).toBe('private-y')
  })

  it('one tab’s disconnect() lets go of its channels only; the socket stays for the others', async () => {
    const name = `disconnect-${Date.now()}`
    const options = { shareTabs: { name }, backoff: { base: 100, cap: 200, retryJitter: 0 } }
    const a = new ClarionClient(fakeOptions(options) as never)
    clients.push(a)
    const b = new ClarionClient(fakeOptions(options) as never)
    clients.push(b)
    await until(() => a.state.role === 'leader' && FakeSocket.all.length === 1, 'a leads')
    const socket = FakeSocket.last
    socket.accept('1.1')
    a.join({ name: 'x', id: 'private-x', visibility: 'private' })
    b.join({ name: 'y', id: 'private-y', visibility: 'private' })
    await until(() => socket.subscribes().length === 2, 'x and y')
    socket.succeed('private-x')
    socket.succeed('private-y')
    b.echo.disconnect()
    await until(() => socket.sentOf('pusher:unsubscribe').length === 1, 'y released')
    expect(socket.readyState).toBe(1)
    expect(a.status()).toBe('connected')
    b.echo.connect()
    await until(() => socket.subscribes().length === 3, 'y again after connect()')
    expect(socket.subscribes()[2]).toMatchObject({ channel: 'private-y' })
  })
})
