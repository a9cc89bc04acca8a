// One Clarion client: laravel-echo over a pusher-js view, and the hub that carries the frames
// (in this tab, or in the leader tab when tabs share one socket).

import Echo, { type BroadcastDriver, type Broadcaster } from 'laravel-echo'
import PusherJs from 'pusher-js'
import { channelAuthorizer, requestHeaders, userAuthenticator } from './auth'
import { createBus, type ClarionBus } from './bus'
import { backendHistory, directHistory, type HistorySource } from './history'
import { Hub } from './hub'
import type { HubMessage } from './messages'
import { envDefaults, resolveSettings, splitOptions, type ClarionOptions, type ResolvedSettings } from './options'
import { TabLink, tabsEnvironment } from './tabs'
import type { Channel, ConnectionStatus } from './types'
import { View, type ClarionState } from './view'
import type { PusherClass, PusherInstance, PusherOptions } from './wire'

type AnyChannel = Broadcaster[BroadcastDriver]['public'] | Broadcaster[BroadcastDriver]['private'] | Broadcaster[BroadcastDriver]['presence']

/** The pusher-js name of a laravel-echo channel (``private-orders.1`` for echo.private('orders.1')). */
function nameOf(channel: AnyChannel): string {
  return (channel as unknown as { name: string }).name
}

interface Joined {
  count: number
  connection: AnyChannel
}

let tabCounter = 0

function newTabId(): string {
  tabCounter += 1
  const random = typeof crypto !== 'undefined' && 'randomUUID' in crypto ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`
  return `${random}-${tabCounter}`
}

function record(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {}
}

function strings(value: unknown): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [key, item] of Object.entries(record(value))) if (typeof item === 'string') out[key] = item
  return out
}

export class ClarionClient {
  readonly echo: Echo<BroadcastDriver>
  readonly bus: ClarionBus
  readonly settings: ResolvedSettings
  readonly tab = newTabId()
  hub: Hub | undefined
  private viewInstance: View | undefined
  private pusherOptions: PusherOptions | undefined
  private tabs: TabLink | undefined
  private readonly joined = new Map<string, Joined>()
  private readonly PusherClass: PusherClass
  private started = false
  private readonly cleanups: Array<() => void> = []
  /** The channel-auth endpoint and its fixed headers, also used to ask for history tokens. */
  private authEndpoint = '/broadcasting/auth'
  private authStaticHeaders: Record<string, string> = {}

  constructor(options: ClarionOptions) {
    const { echo: echoOptions, clarion } = splitOptions(options as Record<string, unknown>)
    this.settings = resolveSettings(clarion)
    this.bus = createBus()
    this.PusherClass = clarion.Pusher ?? (echoOptions.Pusher as PusherClass | undefined) ?? PusherJs
    const broadcaster = String(echoOptions.broadcaster ?? 'reverb')
    const merged = { ...envDefaults(broadcaster), ...echoOptions }
    // laravel-echo builds pusher-js's options (its defaults, CSRF and bearer headers) and calls
    // this "class" with them: the view is made there, around the pusher-js instance Echo will use.
    const client = this
    function ViewPusher(key: string, pusherOptions: PusherOptions): PusherInstance {
      return client.makeView(key, pusherOptions).pusher
    }
    this.echo = new Echo({ ...merged, Pusher: ViewPusher as unknown as PusherClass } as ConstructorParameters<typeof Echo>[0])
    this.patchConnector()
    // Echo's connect() makes a new connector (around the same view): patch it too, and connect.
    const echoConnect = this.echo.connect.bind(this.echo)
    this.echo.connect = () => {
      echoConnect()
      this.patchConnector()
      this.connect()
    }
    if (this.settings.autoConnect) this.start()
  }

  /** Echo reads pusher-js's own states, which never say "reconnecting": it reports the client's. */
  private patchConnector(): void {
    const connector = this.echo.connector as unknown as {
      connectionStatus: () => ConnectionStatus
      onConnectionChange: (callback: (status: ConnectionStatus) => void) => () => void
    }
    connector.connectionStatus = () => this.status()
    connector.onConnectionChange = (callback) => this.onStatus(callback)
  }

  get view(): View {
    if (this.viewInstance === undefined) throw new Error('clarion-vue: the client has no view (laravel-echo did not create pusher-js)')
    return this.viewInstance
  }

  get state(): ClarionState {
    return this.view.state
  }

  get pusher(): PusherInstance {
    return this.view.pusher
  }

  status(): ConnectionStatus {
    return this.view.state.status
  }

  socketId(): string | undefined {
    return this.view.state.socketId
  }

  onStatus(callback: (status: ConnectionStatus) => void): () => void {
    return this.view.onStatus(callback)
  }

  /** Opens the connection (or joins the tabs' one); idempotent. */
  start(): void {
    if (this.started) {
      this.view.connect()
      return
    }
    this.started = true
    const share = this.settings.shareTabs
    const env = share !== undefined ? tabsEnvironment() : undefined
    if (share !== undefined && env !== undefined) {
      this.view.state.role = 'follower'
      const key = String(this.echo.options.key ?? '')
      this.tabs = new TabLink(`${share}:${key}`, this.tab, env, {
        lead: (post) => {
          const hub = this.makeHub(post, true)
          hub.start()
          return { receive: (message) => hub.receive(message), stop: () => hub.dispose() }
        },
        toView: (message) => this.view.receive(message),
        attach: (link) => this.view.attach(link),
        becameLeader: () => {
          this.view.state.role = 'leader'
        },
      })
      this.tabs.start()
      const onHide = (): void => this.tabs?.close()
      if (typeof addEventListener === 'function') {
        addEventListener('pagehide', onHide)
        this.cleanups.push(() => removeEventListener('pagehide', onHide))
      }
      return
    }
    if (share !== undefined) this.settings.log('clarion-vue: shareTabs needs Web Locks and BroadcastChannel; this tab keeps its own socket')
    const hub = this.makeHub((message) => this.view.receive(message))
    this.view.attach((message) => hub.receive(message))
    hub.start()
  }

  connect(): void {
    this.start()
  }

  disconnect(): void {
    this.view.disconnect()
  }

  /** Closes everything: the socket (or this tab's share of it), timers and listeners. */
  dispose(): void {
    this.tabs?.close()
    this.hub?.dispose()
    for (const cleanup of this.cleanups.splice(0)) cleanup()
  }

  // --- reference-counted channels, shared by the composables of this tab -------------------

  join(channel: Channel): AnyChannel {
    const existing = this.joined.get(channel.id)
    if (existing !== undefined) {
      existing.count += 1
      this.view.ref(nameOf(existing.connection), 1)
      return existing.connection
    }
    let connection: AnyChannel
    if (channel.visibility === 'presence') connection = this.echo.join(channel.name)
    else if (channel.visibility === 'private') connection = this.echo.private(channel.name)
    else connection = this.echo.channel(channel.name)
    this.joined.set(channel.id, { count: 1, connection })
    this.view.ref(nameOf(connection), 1)
    return connection
  }

  leave(channel: Channel, leaveAll = false): void {
    const existing = this.joined.get(channel.id)
    if (existing === undefined) return
    existing.count -= 1
    if (existing.count > 0) {
      this.view.ref(nameOf(existing.connection), -1)
      return
    }
    this.joined.delete(channel.id)
    if (leaveAll) this.echo.leave(channel.name)
    else this.echo.leaveChannel(channel.id)
  }

  /** Users of a channel in this tab (for tests and devtools). */
  refs(channelId: string): number {
    return this.joined.get(channelId)?.count ?? 0
  }

  // --- construction ------------------------------------------------------------------------

  private makeView(key: string, options: PusherOptions): View {
    if (this.viewInstance !== undefined) return this.viewInstance
    this.pusherOptions = this.withAuth(options)
    this.viewInstance = new View({
      Pusher: this.PusherClass,
      key,
      pusherOptions: this.pusherOptions,
      tab: this.tab,
      bus: this.bus,
      offlineQueue: this.settings.offlineQueue,
      rewind: this.settings.rewind,
      onResync: this.settings.onResync,
      log: this.settings.log,
    })
    return this.viewInstance
  }

  private makeHub(post: (message: HubMessage) => void, shared = false): Hub {
    const options = this.pusherOptions
    if (options === undefined) throw new Error('clarion-vue: no pusher-js options yet')
    const win = typeof window !== 'undefined' ? window : undefined
    this.hub = new Hub(
      {
        Pusher: this.PusherClass,
        key: String(this.echo.options.key ?? ''),
        pusherOptions: options,
        backoff: this.settings.backoff,
        attemptTimeout: this.settings.attemptTimeout,
        stableAfter: 5000,
        fallback: {
          after: this.settings.enabledFallback ? this.settings.fallback.after : 0,
          interval: this.settings.fallback.interval,
          source: this.settings.enabledFallback ? this.historySource(options) : undefined,
        },
        offlineQueue: this.settings.offlineQueue,
        recovery: this.settings.recovery,
        events: win,
        document: typeof document !== 'undefined' ? document : undefined,
        shared,
        webSockets: win === undefined || typeof (win as { WebSocket?: unknown }).WebSocket !== 'undefined',
        log: this.settings.log,
      },
      post,
    )
    return this.hub
  }

  /** pusher-js's options with this client's authorizers, unless the app brought its own. */
  private withAuth(options: PusherOptions): PusherOptions {
    const source = options as unknown as Record<string, unknown>
    const result: Record<string, unknown> = { ...source }
    const fetchFn = globalThis.fetch.bind(globalThis)
    const provider = this.settings.authHeaders
    const auth = record(source.auth)
    const channelAuthorization = record(source.channelAuthorization)
    if (!('customHandler' in channelAuthorization) && !('authorizer' in source)) {
      result.channelAuthorization = {
        customHandler: channelAuthorizer({
          endpoint: String(channelAuthorization.endpoint ?? source.authEndpoint ?? '/broadcasting/auth'),
          headers: { ...strings(auth.headers), ...strings(channelAuthorization.headers) },
          params: { ...strings(auth.params), ...strings(channelAuthorization.params) },
          provider,
          fetch: fetchFn,
        }),
      }
    }
    const userAuthentication = record(source.userAuthentication)
    if (!('customHandler' in userAuthentication)) {
      result.userAuthentication = {
        customHandler: userAuthenticator({
          endpoint: String(userAuthentication.endpoint ?? '/broadcasting/user-auth'),
          headers: strings(userAuthentication.headers),
          params: strings(userAuthentication.params),
          provider,
          fetch: fetchFn,
        }),
      }
    }
    this.authEndpoint = String(channelAuthorization.endpoint ?? source.authEndpoint ?? '/broadcasting/auth')
    this.authStaticHeaders = { ...strings(auth.headers), ...strings(channelAuthorization.headers) }
    return result as unknown as PusherOptions
  }

  private historySource(options: PusherOptions): HistorySource | undefined {
    const fallback = this.settings.fallback
    const access = {
      fetch: globalThis.fetch.bind(globalThis),
      headers: () => requestHeaders({ headers: this.authStaticHeaders, provider: this.settings.authHeaders }),
    }
    if (fallback.historyEndpoint !== undefined) return backendHistory(fallback.historyEndpoint, access)
    if (fallback.appId === undefined) return undefined
    const source = options as unknown as Record<string, unknown>
    const tls = source.forceTLS === true
    const host = String(source.wsHost ?? (typeof location !== 'undefined' ? location.hostname : '127.0.0.1'))
    const port = String((tls ? source.wssPort : source.wsPort) ?? (tls ? 443 : 80))
    const baseUrl = fallback.httpBase ?? `${tls ? 'https' : 'http'}://${host}:${port}`
    return directHistory(
      { baseUrl, appId: fallback.appId, key: String(this.echo.options.key ?? ''), authEndpoint: this.authEndpoint },
      access,
    )
  }
}
