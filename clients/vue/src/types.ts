// Public types: those of @laravel/echo-vue (same names and shapes), and Clarion's additions.

import type { BroadcastDriver, Broadcaster } from 'laravel-echo'

/**
 * The connection's state. @laravel/echo-vue's statuses, of which ``reconnecting`` is now really
 * reported (after a drop, while the backoff runs), plus ``polling`` while the fallback carries
 * events over HTTP.
 */
export type ConnectionStatus = 'connected' | 'disconnected' | 'connecting' | 'reconnecting' | 'failed' | 'polling'

export type Channel = {
  name: string
  id: string
  visibility: 'private' | 'public' | 'presence'
}

export type BroadcastNotification<TPayload> = TPayload & {
  id: string
  type: string
}

export type Dependency = unknown

export type ChannelReturnType<T extends BroadcastDriver, V extends Channel['visibility']> = V extends 'presence'
  ? Broadcaster[T]['presence']
  : V extends 'private'
    ? Broadcaster[T]['private']
    : Broadcaster[T]['public']

export type ModelPayload<T> = {
  model: T
  connection: string | null
  queue: string | null
  afterCommit: boolean
}

// eslint-disable-next-line @typescript-eslint/no-unused-vars
export type ModelName<T extends string> = T extends `${infer _}.${infer U}` ? ModelName<U> : T

type ModelEvent =
  | 'Retrieved'
  | 'Creating'
  | 'Created'
  | 'Updating'
  | 'Updated'
  | 'Saving'
  | 'Saved'
  | 'Deleting'
  | 'Deleted'
  | 'Trashed'
  | 'ForceDeleting'
  | 'ForceDeleted'
  | 'Restoring'
  | 'Restored'
  | 'Replicating'

export type ModelEvents<T extends string> = `.${ModelName<T>}${ModelEvent}` | `${ModelName<T>}${ModelEvent}`

declare global {
  /**
   * Event payloads by event name, for typed callbacks; extend it in a .d.ts of the app (the same
   * global interface as @laravel/echo-vue's, so existing declarations keep working):
   *
   *     interface Events { OrderShipped: { id: number } }
   */
  // eslint-disable-next-line @typescript-eslint/no-empty-interface
  interface Events {}
}

export type EventName = keyof Events & string

export type InferEventPayload<TEvent extends string> = TEvent extends keyof Events ? Events[TEvent] : unknown

/** What the composables return, as @laravel/echo-vue's do, plus ``stop()`` for use outside ``setup()``. */
export interface EchoHandle<TChannel> {
  /** Leave the channel (when no other user of it remains). */
  leaveChannel: (leaveAll?: boolean) => void
  /** Leave the channel and also its associated private and presence channels. */
  leave: () => void
  /** Stop listening for the event(s) without leaving the channel. */
  stopListening: () => void
  /** Listen for the event(s) again. */
  listen: () => void
  /** The channel instance (laravel-echo's). */
  channel: () => TChannel
  /** Stop everything this call set up: listeners, watchers, and its share of the channel. */
  stop: () => void
}

export interface ChannelHandle<TChannel> {
  leaveChannel: (leaveAll?: boolean) => void
  leave: () => void
  channel: () => TChannel
  stop: () => void
}

/** Recent history for a late joiner: the last ``count`` events, or those of the last ``seconds``. */
export type RewindSpec = { count: number } | { seconds: number }

/**
 * What a catch-up was: ``resume`` after a reconnect, ``probe`` (learning the position of a fresh
 * subscription), ``fill`` (a channel known empty before), ``rewind`` (a late joiner's history).
 */
export type CatchUpKind = 'resume' | 'probe' | 'fill' | 'rewind'

/** Why events may have been missed on a channel; the app should refetch its state. */
export interface ResyncInfo {
  channel: string
  /** The server's reason (epoch_changed, too_old, ...), or ``gap`` / ``epoch_changed`` seen by the client. */
  reason: string
  epoch: string | null
  serial: number
}

export interface ClarionError {
  message: string
  code?: number | undefined
  channel?: string | undefined
  at: number
}

export interface Telemetry {
  /** Successful connections, the first included. */
  connects: number
  /** Failed attempts and drops. */
  failures: number
  /** The delays chosen by the backoff (ms), the last 20. */
  delays: number[]
  /** Time from losing the socket to having it back, last time (ms). */
  lastDowntime: number | null
  lastCloseCode: number | null
  /** Events dropped because their position was already delivered. */
  duplicates: number
  /** Channels that had to resync (events could not be recovered). */
  resyncs: number
  /** Channels recovered after a reconnect. */
  recoveries: number
  /** Client events queued while offline, sent later, and dropped. */
  queued: number
  flushed: number
  dropped: number
  /** History reads made by the polling fallback, and those that failed. */
  polls: number
  pollErrors: number
}

export function emptyTelemetry(): Telemetry {
  return {
    connects: 0,
    failures: 0,
    delays: [],
    lastDowntime: null,
    lastCloseCode: null,
    duplicates: 0,
    resyncs: 0,
    recoveries: 0,
    queued: 0,
    flushed: 0,
    dropped: 0,
    polls: 0,
    pollErrors: 0,
  }
}

export type SubscriptionStatus = 'pending' | 'subscribed' | 'failed' | 'polling' | 'unavailable'

export interface LastEvent {
  event: string
  data: unknown
  at: number
}

export interface SubscriptionState {
  /** Users of the channel in this tab (composables and direct joins). */
  refs: number
  status: SubscriptionStatus
  epoch: string | null
  serial: number | null
  /** Whether the last (re)subscribe tried to recover missed events, and whether that worked. */
  wasRecovering: boolean
  recovered: boolean | null
  lastEvent: LastEvent | null
  error: string | null
}
