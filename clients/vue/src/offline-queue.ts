// Client events (whispers) made while no connection can carry them: kept, bounded in number and
// age, and sent on reconnect; or dropped with a reason the app can see. Never silently.

export interface QueuedSend {
  event: string
  data: unknown
  channel: string
  /** When it was queued (ms, the queue's clock). */
  at: number
}

export type DropReason = 'overflow' | 'expired' | 'left'

export interface OfflineQueueOptions {
  /** At most this many waiting sends; the oldest is dropped to make room. */
  maxSize: number
  /** A send older than this (ms) is dropped rather than sent late. */
  maxAge: number
  onDrop: (send: QueuedSend, reason: DropReason) => void
  now?: () => number
}

export class OfflineQueue {
  private items: QueuedSend[] = []
  private readonly now: () => number

  constructor(private readonly options: OfflineQueueOptions) {
    if (!(Number.isInteger(options.maxSize) && options.maxSize >= 0)) {
      throw new RangeError(`offlineQueue.maxSize must be a whole number of sends, not ${options.maxSize}`)
    }
    if (!(options.maxAge > 0)) throw new RangeError(`offlineQueue.maxAge must be a positive number of ms, not ${options.maxAge}`)
    this.now = options.now ?? Date.now
  }

  get size(): number {
    return this.items.length
  }

  push(event: string, data: unknown, channel: string): void {
    const send: QueuedSend = { event, data, channel, at: this.now() }
    this.expire()
    if (this.options.maxSize === 0) {
      this.options.onDrop(send, 'overflow')
      return
    }
    while (this.items.length >= this.options.maxSize) {
      const oldest = this.items.shift()
      if (oldest !== undefined) this.options.onDrop(oldest, 'overflow')
    }
    this.items.push(send)
  }

  /** Drops what is too old, then offers the rest, oldest first, to ``send``; what it refuses stays queued. */
  flush(send: (item: QueuedSend) => boolean): number {
    this.expire()
    const kept: QueuedSend[] = []
    let sent = 0
    for (const item of this.items) {
      if (send(item)) sent += 1
      else kept.push(item)
    }
    this.items = kept
    return sent
  }

  /** The channel was left: its waiting sends can never be delivered. */
  dropChannel(channel: string): void {
    const kept: QueuedSend[] = []
    for (const item of this.items) {
      if (item.channel === channel) this.options.onDrop(item, 'left')
      else kept.push(item)
    }
    this.items = kept
  }

  private expire(): void {
    const limit = this.now() - this.options.maxAge
    while (this.items.length > 0 && (this.items[0]?.at ?? Infinity) < limit) {
      const old = this.items.shift()
      if (old !== undefined) this.options.onDrop(old, 'expired')
    }
  }
}
