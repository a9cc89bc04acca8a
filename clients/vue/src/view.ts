// A tab's view of the connection: the pusher-js instance that laravel-echo (and so the app) talks
// to. It never opens a socket of its own; frames reach it from the hub, and what it would send goes
// to the hub. It keeps this tab's positions, so it drops what it has already delivered, and this
// tab's state for the store and the bus.

import { reactive } from 'vue'
import type { ClarionBus } from './bus'
import { isRecord, parseFrame, positionOf, toPusherEvent } from './frames'
import type { HubMessage, HubStatus, ViewMessage } from './messages'
import { OfflineQueue } from './offline-queue'
import { Positions, tellsPosition } from './positions'
import {
  emptyTelemetry,
  type ClarionError,
  type ConnectionStatus,
  type ResyncInfo,
  type RewindSpec,
  type SubscriptionState,
  type Telemetry,
} from './types'
import { dispatch, quietPusher, setSocketId, type PusherClass, type PusherInstance, type PusherOptions } from './wire'

/** The state the Pinia store shows; one per tab. */
export interface ClarionState {
  status: ConnectionStatus
  socketId: string | undefined
  transport: 'websocket' | 'polling' | 'none'
  /** solo: this tab holds its own socket; leader: it holds the one socket for all tabs; follower: another tab does. */
  role: 'solo' | 'leader' | 'follower'
  attempt: number
  nextRetryAt: number | null
  lastError: ClarionError | null
  subscriptions: Record<string, SubscriptionState>
  telemetry: Telemetry
}

export interface ViewOptions {
  Pusher: PusherClass
  key: string
  pusherOptions: PusherOptions
  tab: string
  bus: ClarionBus
  offlineQueue: { maxSize: number; maxAge: number }
  rewind: (channel: string) => RewindSpec | undefined
  onResync: ((info: ResyncInfo) => void) | undefined
  log: (message: string) => void
}

interface ChannelLike {
  members?: { setMyID: (id: string) => void }
  emit: (event: string, data?: unknown, metadata?: unknown) => unknown
}

type Listener = (status: ConnectionStatus) => void

export class View {
  readonly pusher: PusherInstance
  readonly positions = new Positions()
  readonly state: ClarionState
  private link: ((message: ViewMessage) => void) | undefined
  private readonly channels = new Set<string>()
  private readonly queue: OfflineQueue
  private readonly listeners = new Set<Listener>()
  private duplicates = 0
  private resyncs = 0
  private dropped = 0
  private hubTelemetry: Telemetry = emptyTelemetry()

  constructor(private readonly options: ViewOptions) {
    this.pusher = quietPusher(options.Pusher, options.key, options.pusherOptions)
    this.state = reactive<ClarionState>({
      status: 'connecting',
      socketId: undefined,
      transport: 'none',
      role: 'solo',
      attempt: 0,
      nextRetryAt: null,
      lastError: null,
      subscriptions: {},
      telemetry: emptyTelemetry(),
    }) as ClarionState
    this.queue = new OfflineQueue({
      ...options.offlineQueue,
      onDrop: (send, reason) => this.onDropped(send.event, send.channel, reason, true),
    })
    this.wrapPusher()
    this.pusher.connection.bind('message', (event: unknown) => this.afterDispatch(event))
  }

  /** Where this view's messages go: the hub in this tab, or over the tabs' channel; undefined while no hub is known. */
  attach(link: ((message: ViewMessage) => void) | undefined): void {
    this.link = link
    if (link === undefined) return
    link({ t: 'hello', tab: this.options.tab })
    for (const channel of this.channels) this.announce(channel)
    this.queue.flush((item) => {
      link({ t: 'send', tab: this.options.tab, event: item.event, data: item.data, channel: item.channel })
      return true
    })
  }

  onStatus(listener: Listener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  connect(): void {
    const link = this.link
    if (link === undefined) return
    this.attach(link) // after a disconnect(), the hub no longer holds this tab's channels
    link({ t: 'connect', tab: this.options.tab })
  }

  disconnect(): void {
    this.link?.({ t: 'disconnect', tab: this.options.tab })
  }

  /** Counts a user of the channel (a composable, or a direct join) for the store. */
  ref(channel: string, delta: number): void {
    const sub = this.subscription(channel)
    sub.refs = Math.max(0, sub.refs + delta)
  }

  // --- pusher-js, turned into a view ---------------------------------------------------------

  private wrapPusher(): void {
    const pusher = this.pusher
    const subscribe = pusher.subscribe.bind(pusher)
    const unsubscribe = pusher.unsubscribe.bind(pusher)
    pusher.subscribe = (name: string) => {
      const channel = subscribe(name)
      if (!this.channels.has(name)) {
        this.channels.add(name)
        this.subscription(name).status = this.state.transport === 'polling' ? 'polling' : 'pending'
        this.announce(name)
      }
      return channel
    }
    pusher.unsubscribe = (name: string) => {
      unsubscribe(name)
      if (this.channels.delete(name)) {
        this.positions.forget(name)
        this.queue.dropChannel(name)
        delete this.state.subscriptions[name]
        this.link?.({ t: 'unsub', tab: this.options.tab, channel: name })
      }
    }
    pusher.send_event = (name: string, data: unknown, channel?: string): boolean => {
      if (!name.startsWith('client-') || channel === undefined) return true // subscribes and the like are the hub's
      if (this.link === undefined) {
        this.queue.push(name, data, channel)
        return true
      }
      this.link({ t: 'send', tab: this.options.tab, event: name, data, channel })
      return true
    }
    pusher.signin = () => {
      this.link?.({ t: 'signin', tab: this.options.tab })
    }
    pusher.connect = () => this.connect()
    pusher.disconnect = () => this.disconnect()
  }

  private announce(channel: string): void {
    this.link?.({
      t: 'sub',
      tab: this.options.tab,
      channel,
      position: this.positions.get(channel),
      rewind: this.options.rewind(channel),
    })
  }

  // --- from the hub ----------------------------------------------------------------------------

  receive(message: HubMessage): void {
    switch (message.t) {
      case 'status':
        this.onHubStatus(message)
        break
      case 'frame':
        if (message.to !== undefined && message.to !== this.options.tab) return
        if (message.exclude === this.options.tab) return
        this.onFrame(message.text, message.myID)
        break
      case 'event':
        this.onDecoded(message.channel, message.event, message.data, message.position)
        break
      case 'caughtUp':
        this.onCaughtUp(message)
        break
      case 'subError': {
        if (!this.channels.has(message.channel)) return
        const sub = this.subscription(message.channel)
        sub.status = 'failed'
        sub.error = isRecord(message.error) && typeof message.error.error === 'string' ? message.error.error : String(message.error)
        const channel = this.pusher.channel(message.channel) as unknown as ChannelLike | undefined
        channel?.emit('pusher:subscription_error', message.error)
        break
      }
      case 'unavailable':
        if (this.channels.has(message.channel)) {
          const sub = this.subscription(message.channel)
          sub.status = 'unavailable'
          sub.error = message.reason
        }
        break
      case 'dropped':
        if (this.channels.has(message.channel)) this.onDropped(message.event, message.channel, message.reason, false)
        break
      case 'leader':
        break
      case 'gone':
        this.onHubStatus({
          status: 'reconnecting',
          socketId: undefined,
          transport: 'none',
          attempt: this.state.attempt,
          nextRetryAt: null,
          lastError: this.state.lastError,
          telemetry: this.hubTelemetry,
        })
        break
    }
  }

  private onHubStatus(status: HubStatus): void {
    const previous = this.state.status
    this.state.status = status.status
    this.state.socketId = status.socketId
    this.state.transport = status.transport
    this.state.attempt = status.attempt
    this.state.nextRetryAt = status.nextRetryAt
    if (status.lastError !== null) this.state.lastError = status.lastError
    this.hubTelemetry = status.telemetry
    this.state.telemetry = {
      ...status.telemetry,
      duplicates: status.telemetry.duplicates + this.duplicates,
      resyncs: this.resyncs,
      dropped: status.telemetry.dropped + this.dropped,
    }
    setSocketId(this.pusher, status.socketId)
    if (status.transport === 'polling') {
      for (const name of this.channels) {
        const sub = this.subscription(name)
        if (sub.status === 'pending' || sub.status === 'subscribed') sub.status = 'polling'
      }
    }
    if (previous !== status.status) {
      this.options.bus.emit('status', status.status)
      for (const listener of this.listeners) listener(status.status)
    }
  }

  private onFrame(text: string, myID: string | undefined): void {
    const frame = parseFrame(text)
    if (frame === undefined) return
    const name = frame.channel
    if (name !== undefined) {
      if (!this.channels.has(name)) return
      const position = positionOf(frame)
      if (position !== undefined && !this.accept(name, position.epoch, position.serial)) return
      if (frame.event === 'pusher_internal:subscription_succeeded') {
        const sub = this.subscription(name)
        sub.status = this.state.transport === 'polling' ? 'polling' : 'subscribed'
        sub.error = null
        if (myID !== undefined) (this.pusher.channel(name) as unknown as ChannelLike | undefined)?.members?.setMyID(myID)
      }
    }
    dispatch(this.pusher, toPusherEvent(frame))
  }

  private onDecoded(name: string, event: string, data: unknown, position: { epoch: string; serial: number } | undefined): void {
    if (!this.channels.has(name)) return
    if (position !== undefined && !this.accept(name, position.epoch, position.serial)) return
    const channel = this.pusher.channel(name) as unknown as ChannelLike | undefined
    channel?.emit(event, data, {})
    this.noteEvent(name, event, data)
  }

  /** False for a duplicate; a gap or a new epoch means missed events: the app resyncs. */
  private accept(channel: string, epoch: string, serial: number): boolean {
    const before = this.positions.get(channel)
    const verdict = this.positions.accept(channel, epoch, serial)
    if (verdict === 'duplicate') {
      this.duplicates += 1
      this.state.telemetry.duplicates = this.hubTelemetry.duplicates + this.duplicates
      return false
    }
    if (verdict === 'gap' || verdict === 'epoch') {
      this.resync({ channel, reason: verdict === 'gap' ? 'gap' : 'epoch_changed', epoch, serial: before?.serial ?? 0 })
    }
    const sub = this.subscription(channel)
    sub.epoch = epoch
    sub.serial = serial
    return true
  }

  private onCaughtUp(message: Extract<HubMessage, { t: 'caughtUp' }>): void {
    const { channel, kind, recovered, epoch, serial } = message
    if (!this.channels.has(channel)) return
    const sub = this.subscription(channel)
    if (kind === 'probe') {
      if (this.positions.get(channel) === undefined && tellsPosition(message.reason)) {
        this.positions.set(channel, { epoch: epoch ?? '', serial })
        sub.epoch = epoch
        sub.serial = serial
      }
      return
    }
    if (kind === 'rewind') return
    sub.wasRecovering = true
    sub.recovered = recovered
    if (!recovered) {
      if (tellsPosition(message.reason)) {
        this.positions.set(channel, { epoch: epoch ?? '', serial })
        sub.epoch = epoch
        sub.serial = serial
      } else this.positions.forget(channel)
      this.resync({ channel, reason: message.reason ?? 'too_old', epoch, serial })
    }
  }

  private resync(info: ResyncInfo): void {
    this.resyncs += 1
    this.state.telemetry.resyncs = this.resyncs
    this.options.log(`clarion-vue: ${info.channel} may have missed events (${info.reason}); resyncing`)
    try {
      this.options.onResync?.(info)
    } finally {
      this.options.bus.emit('resync', info)
    }
  }

  /** ``local``: dropped from this view's own queue (the hub counts its own drops). */
  private onDropped(event: string, channel: string, reason: string, local: boolean): void {
    if (local) {
      this.dropped += 1
      this.state.telemetry.dropped = this.hubTelemetry.dropped + this.dropped
    }
    const message = `clarion-vue: dropped the client event ${event} on ${channel} (${reason})`
    this.state.lastError = { message, channel, at: Date.now() }
    this.options.log(message)
    this.options.bus.emit('dropped', { channel, event, reason })
  }

  /** After pusher-js handed an event to the channel's callbacks: the store and the bus. */
  private afterDispatch(event: unknown): void {
    if (!isRecord(event) || typeof event.event !== 'string' || typeof event.channel !== 'string') return
    if (event.event.startsWith('pusher')) return
    if (event.channel.startsWith('private-encrypted-')) return // delivered decrypted through onDecoded
    this.noteEvent(event.channel, event.event, event.data)
  }

  private noteEvent(channel: string, event: string, data: unknown): void {
    if (!this.channels.has(channel)) return
    this.subscription(channel).lastEvent = { event, data, at: Date.now() }
    this.options.bus.emit(`${channel}:${event}`, { channel, event, data })
  }

  private subscription(channel: string): SubscriptionState {
    let sub = this.state.subscriptions[channel]
    if (sub === undefined) {
      sub = {
        refs: 0,
        status: 'pending',
        epoch: null,
        serial: null,
        wasRecovering: false,
        recovered: null,
        lastEvent: null,
        error: null,
      }
      this.state.subscriptions[channel] = sub
      sub = this.state.subscriptions[channel] as SubscriptionState
    }
    return sub
  }
}
