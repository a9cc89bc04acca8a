// Drives one pusher-js instance's socket with this client's own schedule. pusher-js is only ever
// asked to connect once per attempt: when an attempt fails or a live connection drops, the
// driver stops pusher-js at once (cancelling its fixed-delay retry) and decides when to try again
// from the close code and the backoff.

import { backoffDelay, classifyClose, retryNowDelay, type BackoffOptions } from './backoff'
import { liveTransport, tapTransports, type PusherInstance, type TransportNote } from './wire'

/** Where the driver stands: what the status shown to the app is made from. */
export type DriverPhase = 'idle' | 'connecting' | 'connected' | 'waiting' | 'offline' | 'refused'

export interface DriverHooks {
  /** The socket is up; ``socketId`` is the server's. */
  connected(socketId: string): void
  /** The phase changed (after the driver's own fields were updated). */
  changed(): void
  /** An attempt failed, or a connection dropped: ``failures`` counts them since the last stable connection. */
  failed(failures: number, code: number | undefined): void
}

export interface DriverOptions {
  backoff: BackoffOptions
  /** An attempt that has not connected by then is abandoned (ms). */
  attemptTimeout: number
  /** A connection that lasted this long (ms) resets the backoff; one that drops sooner keeps climbing. */
  stableAfter: number
  random?: () => number
  now?: () => number
  /** Where ``online``/``offline`` and ``visibilitychange`` come from; none under Node. */
  events?: EventTarget | undefined
  document?: (EventTarget & { visibilityState?: string }) | undefined
}

export class SocketDriver {
  phase: DriverPhase = 'idle'
  /** Consecutive failed attempts or short-lived connections: the backoff's exponent. */
  attempt = 0
  everConnected = false
  nextRetryAt: number | null = null
  lastCloseCode: number | undefined = undefined
  /** Delays chosen so far (ms), the last 20. */
  readonly delays: number[] = []
  connects = 0
  /** Failed attempts and drops since the socket was last up: what the polling fallback counts. */
  failures = 0
  lastDowntime: number | null = null

  private timer: ReturnType<typeof setTimeout> | undefined
  private attemptTimer: ReturnType<typeof setTimeout> | undefined
  private attemptCids = new Set<number>()
  private liveCid: number | undefined
  private connectedAt = 0
  private lostAt: number | null = null
  private online = true
  private readonly random: () => number
  private readonly now: () => number
  private readonly undo: Array<() => void> = []

  constructor(
    private readonly pusher: PusherInstance,
    private readonly options: DriverOptions,
    private readonly hooks: DriverHooks,
  ) {
    this.random = options.random ?? Math.random
    this.now = options.now ?? Date.now
    this.undo.push(tapTransports(pusher, (note) => this.onTransport(note)))
    // pusher-js schedules its own retries through this one method (after a close, and when a pong
    // never comes), sometimes twice for one close, leaving a timer that disconnect() cannot
    // cancel. Every retry is the driver's decision: pusher-js's only says the socket is no good.
    const manager = pusher.connection as unknown as { retryIn: (delay: number) => void }
    manager.retryIn = () => this.onPusherRetry()
    const onConnected = (): void => this.onConnected()
    pusher.connection.bind('connected', onConnected)
    this.undo.push(() => pusher.connection.unbind('connected', onConnected))
    const target = options.events
    if (target !== undefined) {
      const online = (): void => this.onOnline()
      const offline = (): void => this.onOffline()
      target.addEventListener('online', online)
      target.addEventListener('offline', offline)
      this.undo.push(() => {
        target.removeEventListener('online', online)
        target.removeEventListener('offline', offline)
      })
    }
    const doc = options.document
    if (doc !== undefined) {
      const visible = (): void => this.onVisibility()
      doc.addEventListener('visibilitychange', visible)
      this.undo.push(() => doc.removeEventListener('visibilitychange', visible))
    }
  }

  /** Connects now (or resumes connecting after ``stop()`` or a refusal). */
  start(): void {
    if (this.phase === 'connecting' || this.phase === 'connected') return
    this.attemptNow()
  }

  /** The app asked to disconnect: no more attempts until ``start()``. */
  stop(): void {
    this.clearTimers()
    this.liveCid = undefined
    this.phase = 'idle'
    this.nextRetryAt = null
    this.pusher.disconnect()
    this.hooks.changed()
  }

  /** Stops for good: timers, listeners and taps. */
  dispose(): void {
    this.stop()
    for (const undo of this.undo.splice(0)) undo()
  }

  private attemptNow(): void {
    this.clearTimers()
    this.nextRetryAt = null
    if (!this.online) {
      this.phase = 'offline'
      this.hooks.changed()
      return
    }
    this.phase = 'connecting'
    this.attemptCids = new Set()
    this.attemptTimer = setTimeout(() => this.attemptFailed(undefined), this.options.attemptTimeout)
    this.hooks.changed()
    this.pusher.connect()
  }

  private onTransport(note: TransportNote): void {
    if (note.state === 'connecting' && this.phase === 'connecting') {
      this.attemptCids.add(note.cid)
    } else if (note.state === 'closed') {
      if (note.cid === this.liveCid) {
        this.liveCid = undefined
        // pusher-js reacts to the close in the same turn (its retry timers are at least a
        // macrotask away); take over once it is done.
        queueMicrotask(() => this.lost(note.code))
      } else if (this.phase === 'connecting' && this.attemptCids.has(note.cid)) {
        this.attemptCids.delete(note.cid)
        queueMicrotask(() => {
          if (this.phase === 'connecting' && this.attemptCids.size === 0) this.attemptFailed(note.code)
        })
      }
    }
  }

  /** pusher-js gave up on the live socket without it closing (a pong that never came): a drop. */
  private onPusherRetry(): void {
    if (this.phase !== 'connected' || this.liveCid === undefined) return
    this.liveCid = undefined
    queueMicrotask(() => this.lost(undefined))
  }

  private onConnected(): void {
    const transport = liveTransport(this.pusher)
    clearTimeout(this.attemptTimer)
    this.attemptTimer = undefined
    this.liveCid = transport?.id
    this.phase = 'connected'
    this.connectedAt = this.now()
    this.connects += 1
    this.failures = 0
    if (this.lostAt !== null) this.lastDowntime = this.connectedAt - this.lostAt
    this.lostAt = null
    this.everConnected = true
    this.nextRetryAt = null
    this.hooks.changed()
    this.hooks.connected(this.pusher.connection.socket_id)
  }

  private lost(code: number | undefined): void {
    if (this.phase !== 'connected') return
    this.lostAt = this.now()
    if (this.now() - this.connectedAt >= this.options.stableAfter) this.attempt = 0
    this.afterFailure(code)
  }

  private attemptFailed(code: number | undefined): void {
    if (this.phase !== 'connecting') return
    if (this.lostAt === null) this.lostAt = this.now()
    this.afterFailure(code)
  }

  private afterFailure(code: number | undefined): void {
    this.clearTimers()
    this.lastCloseCode = code
    this.failures += 1
    this.pusher.disconnect()
    const kind = classifyClose(code)
    if (kind === 'refused') {
      this.phase = 'refused'
      this.hooks.changed()
      this.hooks.failed(this.failures, code)
      return
    }
    const delay =
      kind === 'now' || kind === 'tls'
        ? retryNowDelay(this.options.backoff, this.random)
        : backoffDelay(this.attempt, this.options.backoff, this.random)
    if (kind === 'backoff') this.attempt += 1
    this.schedule(delay)
    this.hooks.failed(this.failures, code)
  }

  private schedule(delay: number): void {
    this.delays.push(delay)
    if (this.delays.length > 20) this.delays.shift()
    if (!this.online) {
      this.phase = 'offline'
      this.hooks.changed()
      return
    }
    this.phase = 'waiting'
    this.nextRetryAt = this.now() + delay
    this.timer = setTimeout(() => this.attemptNow(), delay)
    this.hooks.changed()
  }

  private onOnline(): void {
    this.online = true
    if (this.phase === 'waiting' || this.phase === 'offline') this.attemptNow()
  }

  private onOffline(): void {
    this.online = false
    if (this.phase === 'waiting') {
      this.clearTimers()
      this.nextRetryAt = null
      this.phase = 'offline'
      this.hooks.changed()
    }
  }

  private onVisibility(): void {
    if (this.options.document?.visibilityState === 'visible' && this.phase === 'waiting') this.attemptNow()
  }

  private clearTimers(): void {
    clearTimeout(this.timer)
    clearTimeout(this.attemptTimer)
    this.timer = undefined
    this.attemptTimer = undefined
  }
}
