// The polling fallback: while WebSockets are out, each channel's history is read over HTTP from
// its last position, and what is new goes the way a socket frame would.

import { HistoryError, type HistoryAnswer, type HistoryQuery, type HistorySource } from './history'
import type { Position } from './positions'

export interface PollerHooks {
  position(channel: string): Position | undefined
  /** The first read of a channel: where it stands now (nothing before it is delivered). */
  baseline(channel: string, answer: HistoryAnswer): void
  /** New frames, oldest first. */
  frames(channel: string, frames: Array<Record<string, unknown>>): void
  /** The history since the last position is gone (``answer.reason``): continue from ``answer``'s position. */
  reset(channel: string, answer: HistoryAnswer): void
  error(channel: string, error: unknown): void
  polled(): void
}

export interface PollerOptions {
  /** Time between two rounds over every channel (ms). */
  interval: number
  /** Pages read per channel and round at most (a page is the channel's history size). */
  maxPages?: number
}

export class Poller {
  private readonly channels = new Set<string>()
  private readonly unavailable = new Set<string>()
  private timer: ReturnType<typeof setTimeout> | undefined
  private controller: AbortController | undefined
  private generation = 0
  private running = false

  constructor(
    private readonly source: HistorySource,
    private readonly options: PollerOptions,
    private readonly hooks: PollerHooks,
  ) {}

  get active(): boolean {
    return this.running
  }

  add(channel: string): void {
    this.channels.add(channel)
  }

  remove(channel: string): void {
    this.channels.delete(channel)
    this.unavailable.delete(channel)
  }

  start(): void {
    if (this.running) return
    this.running = true
    this.generation += 1
    void this.round(this.generation)
  }

  /** Stops at once: a read in flight is aborted and its answer, should it still come, ignored. */
  stop(): void {
    this.running = false
    this.generation += 1
    clearTimeout(this.timer)
    this.timer = undefined
    this.controller?.abort()
    this.controller = undefined
  }

  private async round(generation: number): Promise<void> {
    this.controller = new AbortController()
    const signal = this.controller.signal
    for (const channel of [...this.channels]) {
      if (generation !== this.generation) return
      if (this.unavailable.has(channel)) continue
      try {
        await this.pollChannel(channel, generation, signal)
      } catch (error) {
        if (generation !== this.generation) return
        if (error instanceof HistoryError && (error.status === 404 || error.status === 403)) this.unavailable.add(channel)
        this.hooks.error(channel, error)
      }
    }
    if (generation !== this.generation) return
    this.timer = setTimeout(() => void this.round(generation), this.options.interval)
  }

  private async pollChannel(channel: string, generation: number, signal: AbortSignal): Promise<void> {
    const maxPages = this.options.maxPages ?? 10
    for (let page = 0; page < maxPages; page++) {
      const position = this.hooks.position(channel)
      let query: HistoryQuery
      if (position === undefined) query = { channel, limit: 1 }
      else if (position.epoch === '') query = { channel }
      else query = { channel, epoch: position.epoch, since: position.serial }
      const answer = await this.source(query, signal)
      this.hooks.polled()
      if (generation !== this.generation || !this.channels.has(channel)) return
      if (position === undefined) {
        this.hooks.baseline(channel, answer)
        return
      }
      if (!answer.recovered) {
        this.hooks.reset(channel, answer)
        return
      }
      if (position.epoch === '' && answer.events.length > 0 && firstSerial(answer) !== 1) {
        // The channel was empty when last seen, and its first events have already expired.
        this.hooks.reset(channel, { ...answer, recovered: false, reason: 'too_old', events: [] })
        return
      }
      this.hooks.frames(channel, answer.events)
      const last = lastSerial(answer)
      if (last === undefined || answer.serial <= last) return
    }
  }
}

function firstSerial(answer: HistoryAnswer): number | undefined {
  const serial = answer.events[0]?.serial
  return typeof serial === 'number' ? serial : undefined
}

function lastSerial(answer: HistoryAnswer): number | undefined {
  const serial = answer.events[answer.events.length - 1]?.serial
  return typeof serial === 'number' ? serial : undefined
}
