// The hub holds the one socket (in the leader tab, or the only tab) and serves every view: it
// subscribes the union of what the views need, asks for missed events on resubscribe, relays each
// frame to the views, queues client events while offline, and falls back to polling history when
// WebSockets keep failing.

import type { BackoffOptions } from './backoff'
import { isRecord, mayMatter, parseFrame, positionOf, type WireFrame } from './frames'
import type { HistoryAnswer, HistorySource } from './history'
import type { HubMessage, HubStatus, ViewMessage } from './messages'
import { OfflineQueue, type QueuedSend } from './offline-queue'
import { Poller } from './polling'
import { earliest, Positions, tellsPosition, type Position } from './positions'
import { SocketDriver } from './socket-driver'
import { emptyTelemetry, type CatchUpKind, type ClarionError, type ConnectionStatus, type RewindSpec, type Telemetry } from './types'
import { quietPusher, tapFrames, liveTransport, type PusherClass, type PusherInstance, type PusherOptions } from './wire'

export interface FallbackSettings {
  /** Fall back to polling after this many failed attempts in a row (0: never). */
  after: number
  /** Time between two polling rounds (ms). */
  interval: number
  /** Where history is read from; without one, there is no fallback. */
  source: HistorySource | undefined
}

export interface HubOptions {
  Pusher: PusherClass
  key: string
  pusherOptions: PusherOptions
  backoff: BackoffOptions
  attemptTimeout: number
  stableAfter: number
  fallback: FallbackSettings
  offlineQueue: { maxSize: number; maxAge: number }
  /** Resume missed events on resubscribe, and ask a fresh subscription for its position. */
  recovery: boolean
  random?: () => number
  events?: EventTarget | undefined
  document?: (EventTarget & { visibilityState?: string }) | undefined
  /** Whether other tabs share this hub: then one tab's disconnect() only lets go of that tab's channels. */
  shared: boolean
  /** Whether WebSockets exist here at all (false: poll from the start). */
  webSockets: boolean
  log: (message: string) => void
}

const ENCRYPTED = 'private-encrypted-'
/** A resume with an epoch no channel has: the answer tells a fresh subscription where the channel stands. */
const PROBE_EPOCH = '-'
/** How many events a channel known empty may have gained while away and still be filled in. */
const FILL_COUNT = 100

interface Need {
  tabs: Map<string, Position | undefined>
  rewind: RewindSpec | undefined
}

interface PresenceLike {
  members?: { members: Record<string, unknown>; count: number; myID?: unknown }
  subscribed?: boolean
  bind: (event: string, callback: (...args: unknown[]) => void) => unknown
  bind_global: (callback: (event: string, data: unknown) => void) => unknown
}

export class Hub {
  readonly pusher: PusherInstance
  readonly driver: SocketDriver
  readonly positions = new Positions()
  transport: 'websocket' | 'polling' = 'websocket'
  lastError: ClarionError | null = null
  readonly telemetry: Telemetry = emptyTelemetry()

  private readonly needs = new Map<string, Need>()
  private readonly catchUps = new Map<string, CatchUpKind>()
  /** Channels whose first probe went unanswered before the socket dropped: their position was never known. */
  private readonly unsettled = new Set<string>()
  private readonly historyOff = new Set<string>()
  private readonly bound = new WeakSet<object>()
  private readonly queue: OfflineQueue
  private readonly rawSend: (name: string, data: unknown, channel?: string) => boolean
  private poller: Poller | undefined
  private current: Position | undefined
  private disposed = false

  constructor(
    private readonly options: HubOptions,
    private readonly post: (message: HubMessage) => void,
  ) {
    this.pusher = quietPusher(options.Pusher, options.key, options.pusherOptions)
    this.queue = new OfflineQueue({
      maxSize: options.offlineQueue.maxSize,
      maxAge: options.offlineQueue.maxAge,
      onDrop: (send, reason) => this.dropped(send, reason),
    })
    const driverOptions: ConstructorParameters<typeof SocketDriver>[1] = {
      backoff: options.backoff,
      attemptTimeout: options.attemptTimeout,
      stableAfter: options.stableAfter,
      events: options.events,
      document: options.document,
    }
    if (options.random !== undefined) driverOptions.random = options.random
    this.driver = new SocketDriver(this.pusher, driverOptions, {
      connected: () => this.onSocketUp(),
      changed: () => this.publishStatus(),
      failed: (failures, code) => this.onFailure(failures, code),
    })
    this.rawSend = this.pusher.send_event.bind(this.pusher)
    this.pusher.send_event = (name: string, data: unknown, channel?: string): boolean => this.send(name, data, channel)
    this.pusher.connection.bind('error', (error: unknown) => this.onPusherError(error))
  }

  start(): void {
    if (!this.options.webSockets && this.options.fallback.source !== undefined) {
      this.startPolling()
      return
    }
    this.driver.start()
  }

  /** The app asked to disconnect. */
  stop(): void {
    this.stopPolling()
    this.driver.stop()
  }

  dispose(): void {
    if (this.disposed) return
    this.disposed = true
    this.stopPolling()
    this.driver.dispose()
  }

  status(): HubStatus {
    return {
      status: this.connectionStatus(),
      socketId: this.driver.phase === 'connected' ? this.pusher.connection.socket_id : undefined,
      transport: this.transport === 'polling' ? 'polling' : this.driver.phase === 'connected' ? 'websocket' : 'none',
      attempt: this.driver.attempt,
      nextRetryAt: this.driver.nextRetryAt,
      lastError: this.lastError,
      telemetry: {
        ...this.telemetry,
        connects: this.driver.connects,
        delays: [...this.driver.delays],
        lastDowntime: this.driver.lastDowntime,
        lastCloseCode: this.driver.lastCloseCode ?? null,
      },
    }
  }

  connectionStatus(): ConnectionStatus {
    if (this.transport === 'polling') return 'polling'
    switch (this.driver.phase) {
      case 'connected':
        return 'connected'
      case 'refused':
        return 'failed'
      case 'idle':
        return 'disconnected'
      default:
        return this.driver.everConnected ? 'reconnecting' : 'connecting'
    }
  }

  /** A message from a view (this tab's or another's). */
  receive(message: ViewMessage): void {
    switch (message.t) {
      case 'hello':
        this.post({ t: 'status', ...this.status() })
        break
      case 'sub':
        this.need(message.tab, message.channel, message.position, message.rewind)
        break
      case 'unsub':
        this.release(message.tab, message.channel)
        break
      case 'send':
        this.clientEvent(message.tab, message.event, message.data, message.channel)
        break
      case 'signin':
        this.pusher.signin()
        break
      case 'connect':
        if (this.transport !== 'polling') this.driver.start()
        break
      case 'disconnect':
        if (this.options.shared) this.releaseTab(message.tab)
        else this.stop()
        break
      case 'bye':
        this.releaseTab(message.tab)
        break
    }
  }

  // --- channels ------------------------------------------------------------------------------

  private need(tab: string, channel: string, position: Position | undefined, rewind: RewindSpec | undefined): void {
    let need = this.needs.get(channel)
    const fresh = need === undefined
    if (need === undefined) {
      need = { tabs: new Map(), rewind }
      this.needs.set(channel, need)
    }
    need.tabs.set(tab, position)
    if (fresh) {
      if (position !== undefined) this.positions.set(channel, position)
      const subscription = this.pusher.subscribe(channel) as unknown as PresenceLike
      this.bindChannel(channel, subscription)
      this.poller?.add(channel)
      return
    }
    // Another tab already holds the channel: this one gets its state now, and what it missed
    // between its own position and the hub's, if it asked for that.
    const success = this.successFrame(channel)
    if (success !== undefined) this.post({ t: 'frame', text: success.text, to: tab, myID: success.myID })
    if (rewind !== undefined && this.transport === 'websocket' && this.driver.phase === 'connected') {
      this.catchUps.set(channel, 'rewind')
      this.rawSend('clarion:rewind', { channel, ...rewind })
    }
  }

  private releaseTab(tab: string): void {
    for (const channel of [...this.needs.keys()]) this.release(tab, channel)
  }

  private release(tab: string, channel: string): void {
    const need = this.needs.get(channel)
    if (need === undefined || !need.tabs.delete(tab)) return
    if (need.tabs.size > 0) return
    this.needs.delete(channel)
    this.pusher.unsubscribe(channel)
    this.positions.forget(channel)
    this.catchUps.delete(channel)
    this.unsettled.delete(channel)
    this.poller?.remove(channel)
    this.queue.dropChannel(channel)
  }

  private bindChannel(name: string, channel: PresenceLike): void {
    if (this.bound.has(channel)) return
    this.bound.add(channel)
    channel.bind('pusher:subscription_succeeded', () => this.flushQueue(name))
    channel.bind('pusher:subscription_error', (error: unknown) => {
      this.lastError = { message: describe(error), channel: name, at: Date.now() }
      this.options.log(`clarion-vue: subscribing to ${name} was refused: ${describe(error)}`)
      this.post({ t: 'subError', channel: name, error: plain(error) })
      this.publishStatus()
    })
    if (name.startsWith(ENCRYPTED)) {
      // Only this socket holds the channel's key: other tabs get the events decrypted.
      channel.bind_global((event: string, data: unknown) => {
        if (event.startsWith('pusher:')) return
        this.post({ t: 'event', channel: name, event, data, position: this.current })
      })
    }
  }

  /** A subscription_succeeded for a tab joining a channel the hub already holds. */
  private successFrame(name: string): { text: string; myID: string | undefined } | undefined {
    const channel = this.pusher.channel(name) as unknown as PresenceLike | undefined
    if (channel === undefined || !channel.subscribed) return undefined
    const members = channel.members
    const data =
      members !== undefined
        ? { presence: { ids: Object.keys(members.members), hash: members.members, count: members.count } }
        : {}
    const text = JSON.stringify({ event: 'pusher_internal:subscription_succeeded', channel: name, data: JSON.stringify(data) })
    const myID = members?.myID
    return { text, myID: myID === undefined || myID === null ? undefined : String(myID) }
  }

  /** Every frame pusher-js sends goes through here: subscribes ask for missed events, client events wait for a socket. */
  private send(name: string, data: unknown, channel?: string): boolean {
    if (name === 'pusher:subscribe' && isRecord(data) && typeof data.channel === 'string') {
      return this.rawSend(name, this.withCatchUp(data.channel, data), channel)
    }
    if (name.startsWith('client-') && channel !== undefined && !this.canSendOn(channel)) {
      this.queue.push(name, data, channel)
      this.telemetry.queued += 1
      this.publishStatus()
      return true
    }
    return this.rawSend(name, data, channel)
  }

  private withCatchUp(channel: string, data: Record<string, unknown>): Record<string, unknown> {
    const need = this.needs.get(channel)
    const hinted = need === undefined ? undefined : earliestOf([...need.tabs.values()])
    const known = hinted !== undefined ? earliest(this.positions.get(channel), hinted) : this.positions.get(channel)
    const position = this.options.recovery ? known : undefined
    if (position !== undefined && position.epoch !== '') {
      this.catchUps.set(channel, 'resume')
      return { ...data, resume: { epoch: position.epoch, serial: position.serial } }
    }
    if (position !== undefined) {
      this.catchUps.set(channel, 'fill')
      return { ...data, rewind: { count: FILL_COUNT } }
    }
    if (need?.rewind !== undefined) {
      this.catchUps.set(channel, 'rewind')
      const rewind = need.rewind
      need.rewind = undefined
      return { ...data, rewind }
    }
    if (this.options.recovery && !this.historyOff.has(channel)) {
      // A probe still waiting for its answer from the last socket: events published while it was
      // down cannot be told from older ones, so the next answer decides (onCaughtUp).
      if (this.catchUps.get(channel) === 'probe') this.unsettled.add(channel)
      this.catchUps.set(channel, 'probe')
      return { ...data, resume: { epoch: PROBE_EPOCH, serial: 0 } }
    }
    return data
  }

  private canSendOn(channel: string): boolean {
    if (this.transport !== 'websocket' || this.driver.phase !== 'connected') return false
    return (this.pusher.channel(channel) as unknown as PresenceLike | undefined)?.subscribed === true
  }

  private clientEvent(tab: string, event: string, data: unknown, channel: string): void {
    this.pusher.send_event(event, data, channel)
    // Other tabs are other clients: each would have got the whisper from the server on a socket of its own.
    const subscription = this.pusher.channel(channel) as unknown as PresenceLike | undefined
    const userId = subscription?.members?.myID
    const frame: Record<string, unknown> = { event, channel, data }
    if (userId !== undefined && userId !== null) frame.user_id = String(userId)
    this.post({ t: 'frame', text: JSON.stringify(frame), exclude: tab })
  }

  private flushQueue(channel: string): void {
    const sent = this.queue.flush((item) => item.channel === channel && this.canSendOn(channel) && this.rawSend(item.event, item.data, item.channel))
    if (sent > 0) {
      this.telemetry.flushed += sent
      this.publishStatus()
    }
  }

  private dropped(send: QueuedSend, reason: string): void {
    this.telemetry.dropped += 1
    const message = `clarion-vue: dropped the client event ${send.event} on ${send.channel} (${reason})`
    this.lastError = { message, channel: send.channel, at: Date.now() }
    this.options.log(message)
    this.post({ t: 'dropped', tab: '*', event: send.event, channel: send.channel, reason })
    this.publishStatus()
  }

  // --- the socket ------------------------------------------------------------------------------

  private onSocketUp(): void {
    if (this.transport === 'polling') this.stopPolling()
    const transport = liveTransport(this.pusher)
    if (transport !== undefined) tapFrames(transport, (text) => this.onSocketFrame(text))
    this.publishStatus()
  }

  /** Each raw frame off the socket: positions read, duplicates and Clarion's markers kept from pusher-js, the rest relayed. */
  private onSocketFrame(text: string): boolean {
    this.current = undefined
    if (!text.includes('"channel"') && !text.includes('pusher:signin_success')) return true
    const frame = parseFrame(text)
    if (frame === undefined) return true
    if (frame.event === 'clarion:resumed' || frame.event === 'clarion:rewound') {
      this.onCaughtUp(frame)
      return false
    }
    if (mayMatter(text) && frame.channel !== undefined) {
      const position = positionOf(frame)
      if (position !== undefined) {
        if (this.positions.accept(frame.channel, position.epoch, position.serial) === 'duplicate') {
          this.telemetry.duplicates += 1
          this.publishStatus()
          return false
        }
        this.current = position
      }
    }
    this.relay(frame, text)
    return true
  }

  private relay(frame: WireFrame, text: string): void {
    const channel = frame.channel
    if (channel !== undefined && channel.startsWith(ENCRYPTED) && !frame.event.startsWith('pusher')) return
    let myID: string | undefined
    if (frame.event === 'pusher_internal:subscription_succeeded' && channel !== undefined) {
      const id = (this.pusher.channel(channel) as unknown as PresenceLike | undefined)?.members?.myID
      if (id !== undefined && id !== null) myID = String(id)
    }
    this.post({ t: 'frame', text, myID })
  }

  private onCaughtUp(frame: WireFrame): void {
    const channel = frame.channel
    const data = typeof frame.data === 'string' ? safeParse(frame.data) : frame.data
    if (channel === undefined || !isRecord(data)) return
    const kind = this.catchUps.get(channel) ?? (frame.event === 'clarion:rewound' ? 'rewind' : 'resume')
    this.catchUps.delete(channel)
    const epoch = typeof data.epoch === 'string' ? data.epoch : null
    const serial = typeof data.serial === 'number' ? data.serial : 0
    const reason = typeof data.reason === 'string' ? data.reason : undefined
    let recovered = frame.event === 'clarion:resumed' ? data.recovered === true : reason === undefined
    if (reason === 'history_off') this.historyOff.add(channel)
    if (kind === 'fill' && reason === undefined && typeof data.count === 'number' && data.count < serial) {
      recovered = false
    }
    if (kind === 'resume' && recovered) this.telemetry.recoveries += 1
    if (!recovered || kind === 'probe') {
      if (tellsPosition(reason)) this.positions.set(channel, { epoch: epoch ?? '', serial })
      else this.positions.forget(channel)
    }
    const message: HubMessage = { t: 'caughtUp', channel, kind, recovered, epoch, serial }
    if (reason !== undefined) message.reason = kind === 'fill' && !recovered ? 'too_old' : reason
    else if (!recovered) message.reason = 'too_old'
    if (kind === 'probe' && tellsPosition(reason) && this.unsettled.delete(channel) && serial > 0) {
      // Subscribed, dropped before its position was known, and the channel has events now: some
      // may have been published while the socket was down. Nothing can be replayed: resync.
      message.kind = 'resume'
      message.recovered = false
      message.reason = 'unknown_position'
    }
    this.post(message)
    this.publishStatus()
  }

  private onFailure(failures: number, code: number | undefined): void {
    this.telemetry.failures += 1
    this.lastError = {
      message: code === undefined ? 'the connection attempt failed' : `the connection closed with code ${code}`,
      code,
      at: Date.now(),
    }
    const fallback = this.options.fallback
    if (fallback.source !== undefined && fallback.after > 0 && failures >= fallback.after && this.transport !== 'polling') {
      this.startPolling()
    }
    this.publishStatus()
  }

  private onPusherError(error: unknown): void {
    if (!isRecord(error) || error.type !== 'PusherError' || !isRecord(error.data)) return
    const code = typeof error.data.code === 'number' ? error.data.code : undefined
    const message = typeof error.data.message === 'string' ? error.data.message : 'pusher:error'
    this.lastError = { message, code, at: Date.now() }
    this.publishStatus()
  }

  // --- polling ---------------------------------------------------------------------------------

  private startPolling(): void {
    const source = this.options.fallback.source
    if (source === undefined || this.transport === 'polling') return
    this.transport = 'polling'
    this.options.log('clarion-vue: WebSockets are failing; polling history until they work again')
    this.poller = new Poller(
      source,
      { interval: this.options.fallback.interval },
      {
        position: (channel) => this.positions.get(channel),
        baseline: (channel, answer) => this.pollBaseline(channel, answer),
        frames: (channel, frames) => this.pollFrames(channel, frames),
        reset: (channel, answer) => this.pollReset(channel, answer),
        error: (channel, error) => this.pollError(channel, error),
        polled: () => {
          this.telemetry.polls += 1
        },
      },
    )
    for (const channel of this.needs.keys()) this.poller.add(channel)
    this.poller.start()
    this.publishStatus()
  }

  private stopPolling(): void {
    if (this.poller === undefined) return
    this.poller.stop()
    this.poller = undefined
    this.transport = 'websocket'
    this.publishStatus()
  }

  private pollBaseline(channel: string, answer: HistoryAnswer): void {
    if (this.positions.get(channel) !== undefined) return
    this.positions.set(channel, { epoch: answer.epoch ?? '', serial: answer.serial })
    // As in onCaughtUp: a socket's probe that never got its answer leaves the events published
    // since then unknown.
    const unsettled = this.catchUps.get(channel) === 'probe' || this.unsettled.has(channel)
    if (this.catchUps.get(channel) === 'probe') this.catchUps.delete(channel)
    this.unsettled.delete(channel)
    if (unsettled && answer.serial > 0) {
      const message: HubMessage = { t: 'caughtUp', channel, kind: 'resume', recovered: false, epoch: answer.epoch, serial: answer.serial }
      message.reason = 'unknown_position'
      this.post(message)
      return
    }
    this.post({ t: 'caughtUp', channel, kind: 'probe', recovered: true, epoch: answer.epoch, serial: answer.serial })
  }

  private pollFrames(channel: string, frames: Array<Record<string, unknown>>): void {
    for (const frame of frames) {
      const text = JSON.stringify(frame)
      const parsed = parseFrame(text)
      if (parsed === undefined || parsed.channel !== channel) continue
      const position = positionOf(parsed)
      if (position !== undefined && this.positions.accept(channel, position.epoch, position.serial) === 'duplicate') {
        this.telemetry.duplicates += 1
        continue
      }
      this.current = position
      this.relay(parsed, text)
      if (channel.startsWith(ENCRYPTED)) this.options.log(`clarion-vue: ${channel} cannot be decrypted while polling`)
    }
    this.current = undefined
  }

  private pollReset(channel: string, answer: HistoryAnswer): void {
    this.positions.set(channel, { epoch: answer.epoch ?? '', serial: answer.serial })
    const message: HubMessage = { t: 'caughtUp', channel, kind: 'resume', recovered: false, epoch: answer.epoch, serial: answer.serial }
    message.reason = answer.reason ?? 'too_old'
    this.post(message)
  }

  private pollError(channel: string, error: unknown): void {
    this.telemetry.pollErrors += 1
    const text = error instanceof Error ? error.message : String(error)
    this.lastError = { message: text, channel, at: Date.now() }
    this.options.log(`clarion-vue: polling ${channel} failed: ${text}`)
    const status = isRecord(error) && typeof error.status === 'number' ? error.status : 0
    if (status === 404 || status === 403) this.post({ t: 'unavailable', channel, reason: text })
    this.publishStatus()
  }

  private publishStatus(): void {
    if (this.disposed) return
    this.post({ t: 'status', ...this.status() })
  }
}

function earliestOf(positions: Array<Position | undefined>): Position | undefined {
  let result: Position | undefined
  for (const position of positions) {
    if (position === undefined) continue
    result = result === undefined ? position : earliest(result, position)
    if (result === undefined) return undefined
  }
  return result
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message
  if (isRecord(error)) {
    if (typeof error.error === 'string') return error.error
    if (typeof error.status === 'number') return `status ${error.status}`
  }
  return String(error)
}

/** Something that survives a BroadcastChannel (structured clone): no functions, no class instances. */
function plain(value: unknown): unknown {
  try {
    return JSON.parse(JSON.stringify(value)) as unknown
  } catch {
    return describe(value)
  }
}
