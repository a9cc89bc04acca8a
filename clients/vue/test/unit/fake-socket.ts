// A stand-in for the WebSocket under pusher-js in unit tests (fake timers cannot drive a real
// socket; the integration tests use real ones against `clarion serve`). It plays the server's
// side of Pusher protocol v7 as far as the tests need: handshake, subscribe answers, events,
// close codes, refusals.
import PusherJs from 'pusher-js'

type Handler = ((event: unknown) => void) | undefined

export class FakeSocket {
  static all: FakeSocket[] = []
  static onCreate: ((socket: FakeSocket) => void) | undefined
  readonly sent: Array<Record<string, unknown>> = []
  readyState = 0
  onopen: Handler
  onmessage: Handler
  onclose: Handler
  onerror: Handler
  closedByClient = false

  constructor(readonly url: string) {
    FakeSocket.all.push(this)
    FakeSocket.onCreate?.(this)
  }

  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>)
  }

  ping(): void {}

  close(): void {
    if (this.readyState === 3) return
    this.closedByClient = true
    this.readyState = 3
    queueMicrotask(() => this.onclose?.({ code: 1000, reason: '', wasClean: true }))
  }

  // --- the server's side --------------------------------------------------------------------

  /** Opens and sends pusher:connection_established. */
  accept(socketId = `${FakeSocket.all.length}.1`): void {
    this.readyState = 1
    this.onopen?.({})
    this.frame({ event: 'pusher:connection_established', data: JSON.stringify({ socket_id: socketId, activity_timeout: 120 }) })
  }

  /** The connection could not be made. */
  refuse(): void {
    this.readyState = 3
    this.onerror?.({ type: 'error' })
    this.onclose?.({ code: 1006, reason: '', wasClean: false })
  }

  /** The server closes with ``code``. */
  drop(code = 1006, reason = ''): void {
    this.readyState = 3
    this.onclose?.({ code, reason, wasClean: code !== 1006 })
  }

  frame(frame: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(frame) })
  }

  succeed(channel: string, data: unknown = {}): void {
    this.frame({ event: 'pusher_internal:subscription_succeeded', channel, data: JSON.stringify(data) })
  }

  event(channel: string, event: string, data: unknown, position?: { epoch: string; serial: number }, replayed = false): void {
    const frame: Record<string, unknown> = { event, channel, data: JSON.stringify(data) }
    if (position !== undefined) {
      frame.epoch = position.epoch
      frame.serial = position.serial
    }
    if (replayed) frame.replayed = true
    this.frame(frame)
  }

  resumed(channel: string, body: Record<string, unknown>): void {
    this.frame({ event: 'clarion:resumed', channel, data: JSON.stringify({ channel, ...body }) })
  }

  /** The frames of one kind this socket sent. */
  sentOf(event: string): Array<Record<string, unknown>> {
    return this.sent.filter((f) => f.event === event)
  }

  subscribes(): Array<Record<string, unknown>> {
    return this.sentOf('pusher:subscribe').map((f) => f.data as Record<string, unknown>)
  }

  static get last(): FakeSocket {
    const socket = FakeSocket.all[FakeSocket.all.length - 1]
    if (socket === undefined) throw new Error('no socket was opened')
    return socket
  }

  static open(): FakeSocket[] {
    return FakeSocket.all.filter((s) => s.readyState !== 3)
  }
}

/** Makes pusher-js's Node build open FakeSockets; returns the undo. */
export function useFakeSockets(): () => void {
  const runtime = (PusherJs as unknown as { Runtime: { getWebSocketAPI: () => unknown } }).Runtime
  const original = runtime.getWebSocketAPI
  runtime.getWebSocketAPI = () => FakeSocket
  FakeSocket.all = []
  FakeSocket.onCreate = undefined
  return () => {
    runtime.getWebSocketAPI = original
  }
}

/** Echo/pusher-js options for a client on the fake server; auth is answered without a network. */
export function fakeOptions(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    broadcaster: 'reverb',
    key: 'test-key',
    wsHost: '127.0.0.1',
    wsPort: 6001,
    wssPort: 6001,
    forceTLS: false,
    enabledTransports: ['ws'],
    channelAuthorization: {
      customHandler: (params: { socketId: string; channelName: string }, callback: (e: null, d: unknown) => void) =>
        callback(null, {
          auth: `test-key:${params.socketId}:${params.channelName}`,
          ...(params.channelName.startsWith('presence-')
            ? { channel_data: JSON.stringify({ user_id: `u-${params.socketId}`, user_info: { name: 'test' } }) }
            : {}),
        }),
    },
    logger: () => {},
    ...extra,
  }
}
