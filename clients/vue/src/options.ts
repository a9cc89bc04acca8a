// Settings: laravel-echo's and pusher-js's (so an existing configureEcho() call works unchanged),
// plus Clarion's: backoff, recovery, polling fallback, tab sharing and the offline queue.

import type { BroadcastDriver, EchoOptions } from 'laravel-echo'
import { DEFAULT_BACKOFF, validateBackoff, type BackoffOptions } from './backoff'
import type { ResyncInfo, RewindSpec } from './types'
import type { PusherClass } from './wire'

export type HeadersProvider = () => Record<string, string> | Promise<Record<string, string>>

export interface FallbackOptions {
  /** Poll after this many failed connection attempts in a row (default 3; 0 never). */
  after?: number
  /** Time between two polling rounds, in ms (default 3000). */
  interval?: number
  /** Clarion's app id, to read its history endpoint directly (with ``httpBase``). */
  appId?: string
  /** Clarion's HTTP base URL; default: the WebSocket host and port over http(s). */
  httpBase?: string
  /** The app backend's history route (``GET /broadcasting/history``), where Clarion is not reachable over plain HTTP. */
  historyEndpoint?: string
}

export interface ClarionSettings {
  /** Called on every channel (re)authorization and history token request: a refreshed token is used. */
  authHeaders?: HeadersProvider
  /** Reconnect schedule: ``base`` (ms, default 1000: the first retry waits 0.5–1 s), ``cap`` (default 30000), ``retryJitter`` (default 1000). */
  backoff?: Partial<BackoffOptions>
  /** An attempt that has not connected within this time (ms) is abandoned and retried (default 10000). */
  attemptTimeout?: number
  /** Recover missed events after a reconnect (default true). */
  recovery?: boolean
  /** Called when a channel's missed events cannot be recovered: reload that state. */
  onResync?: (info: ResyncInfo) => void
  /** Recent history for late joiners: per channel-name prefix, or a function of the channel name. */
  rewind?: Record<string, RewindSpec> | ((channel: string) => RewindSpec | undefined)
  /** Poll history while WebSockets fail (needs ``appId`` or ``historyEndpoint``); false: never. */
  fallback?: FallbackOptions | false
  /** One connection for all tabs of this origin (default false); ``name`` separates several apps on one origin. */
  shareTabs?: boolean | { name?: string }
  /** Client events made while disconnected: ``maxSize`` (default 100) and ``maxAge`` in ms (default 30000). */
  offlineQueue?: { maxSize?: number; maxAge?: number }
  /** Connect as soon as the client is first used (default true). */
  autoConnect?: boolean
  /** Where failures are reported (default console.warn); never given payloads or secrets. */
  logger?: (message: string) => void
  /** The pusher-js class to use (default: the one this package depends on). */
  Pusher?: PusherClass
}

/** What createClarion() / configureEcho() accept. */
export type ClarionOptions<T extends BroadcastDriver = BroadcastDriver> = EchoOptions<T> & ClarionSettings

export interface ResolvedSettings {
  authHeaders: HeadersProvider | undefined
  backoff: BackoffOptions
  attemptTimeout: number
  recovery: boolean
  onResync: ((info: ResyncInfo) => void) | undefined
  rewind: (channel: string) => RewindSpec | undefined
  fallback: Required<Pick<FallbackOptions, 'after' | 'interval'>> & Omit<FallbackOptions, 'after' | 'interval'>
  enabledFallback: boolean
  shareTabs: string | undefined
  offlineQueue: { maxSize: number; maxAge: number }
  autoConnect: boolean
  log: (message: string) => void
}

const CLARION_KEYS = [
  'authHeaders',
  'backoff',
  'attemptTimeout',
  'recovery',
  'onResync',
  'rewind',
  'fallback',
  'shareTabs',
  'offlineQueue',
  'autoConnect',
  'logger',
] as const

/** Splits Clarion's own settings from those laravel-echo and pusher-js read. */
export function splitOptions(options: Record<string, unknown>): { echo: Record<string, unknown>; clarion: ClarionSettings } {
  const echo: Record<string, unknown> = { ...options }
  const clarion: Record<string, unknown> = {}
  for (const key of CLARION_KEYS) {
    if (key in echo) {
      clarion[key] = echo[key]
      delete echo[key]
    }
  }
  return { echo, clarion: clarion as ClarionSettings }
}

function positive(name: string, value: number): number {
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${name} must be a positive number, not ${value}`)
  return value
}

export function resolveSettings(settings: ClarionSettings): ResolvedSettings {
  const backoff = validateBackoff({ ...DEFAULT_BACKOFF, ...settings.backoff })
  const fallback = settings.fallback === false ? {} : (settings.fallback ?? {})
  const after = fallback.after ?? 3
  if (!(Number.isInteger(after) && after >= 0)) throw new RangeError(`fallback.after must be a whole number, not ${after}`)
  const rewind = settings.rewind
  let rewindOf: (channel: string) => RewindSpec | undefined
  if (typeof rewind === 'function') rewindOf = rewind
  else if (rewind !== undefined) {
    const rules = Object.entries(rewind).sort(([a], [b]) => b.length - a.length)
    rewindOf = (channel) => rules.find(([prefix]) => channel.startsWith(prefix))?.[1]
  } else rewindOf = () => undefined
  const share = settings.shareTabs
  return {
    authHeaders: settings.authHeaders,
    backoff,
    attemptTimeout: positive('attemptTimeout', settings.attemptTimeout ?? 10_000),
    recovery: settings.recovery ?? true,
    onResync: settings.onResync,
    rewind: rewindOf,
    fallback: { ...fallback, after, interval: positive('fallback.interval', fallback.interval ?? 3000) },
    enabledFallback: settings.fallback !== false && after > 0,
    shareTabs: share === true ? 'default' : share === false || share === undefined ? undefined : (share.name ?? 'default'),
    offlineQueue: {
      maxSize: settings.offlineQueue?.maxSize ?? 100,
      maxAge: positive('offlineQueue.maxAge', settings.offlineQueue?.maxAge ?? 30_000),
    },
    autoConnect: settings.autoConnect ?? true,
    log: settings.logger ?? ((message: string) => console.warn(message)),
  }
}

/**
 * laravel-echo's defaults for each broadcaster, read from the app's Vite environment as
 * @laravel/echo-vue reads them (VITE_REVERB_*, VITE_PUSHER_*).
 */
export function envDefaults(broadcaster: string): Record<string, unknown> {
  const env = viteEnv()
  if (broadcaster === 'reverb') {
    return {
      broadcaster: 'reverb',
      key: env.VITE_REVERB_APP_KEY,
      wsHost: env.VITE_REVERB_HOST,
      wsPort: env.VITE_REVERB_PORT,
      wssPort: env.VITE_REVERB_PORT,
      forceTLS: (env.VITE_REVERB_SCHEME ?? 'https') === 'https',
      enabledTransports: ['ws', 'wss'],
    }
  }
  if (broadcaster === 'pusher') {
    return {
      broadcaster: 'pusher',
      key: env.VITE_PUSHER_APP_KEY,
      cluster: env.VITE_PUSHER_APP_CLUSTER,
      forceTLS: true,
      wsHost: env.VITE_PUSHER_HOST,
      wsPort: env.VITE_PUSHER_PORT,
      wssPort: env.VITE_PUSHER_PORT,
      enabledTransports: ['ws', 'wss'],
    }
  }
  return { broadcaster }
}

interface ViteEnv {
  VITE_REVERB_APP_KEY?: string
  VITE_REVERB_HOST?: string
  VITE_REVERB_PORT?: string
  VITE_REVERB_SCHEME?: string
  VITE_PUSHER_APP_KEY?: string
  VITE_PUSHER_APP_CLUSTER?: string
  VITE_PUSHER_HOST?: string
  VITE_PUSHER_PORT?: string
}

function viteEnv(): ViteEnv {
  // The app's Vite build replaces each import.meta.env.VITE_* below (this package's build keeps
  // them verbatim, see vite.config.ts); elsewhere import.meta.env is undefined.
  const meta = import.meta as ImportMeta & { env?: ViteEnv }
  if (meta.env === undefined) return {}
  return {
    VITE_REVERB_APP_KEY: import.meta.env.VITE_REVERB_APP_KEY,
    VITE_REVERB_HOST: import.meta.env.VITE_REVERB_HOST,
    VITE_REVERB_PORT: import.meta.env.VITE_REVERB_PORT,
    VITE_REVERB_SCHEME: import.meta.env.VITE_REVERB_SCHEME,
    VITE_PUSHER_APP_KEY: import.meta.env.VITE_PUSHER_APP_KEY,
    VITE_PUSHER_APP_CLUSTER: import.meta.env.VITE_PUSHER_APP_CLUSTER,
    VITE_PUSHER_HOST: import.meta.env.VITE_PUSHER_HOST,
    VITE_PUSHER_PORT: import.meta.env.VITE_PUSHER_PORT,
  }
}
