// Configuration: createClarion() is a Vue plugin, and configureEcho() its alias with
// @laravel/echo-vue's signature. The client is made on first use, as Echo is there.

import type { App } from 'vue'
import type Echo from 'laravel-echo'
import type { BroadcastDriver } from 'laravel-echo'
import { ClarionClient } from './client'
import type { ClarionOptions } from './options'
import { useClarionStore } from './store'

let config: ClarionOptions | null = null
let client: ClarionClient | null = null

export interface ClarionPlugin {
  install(app: App): void
  /** The client (made now if it was not yet). */
  readonly client: ClarionClient
}

/**
 * Configures the connection: laravel-echo's and pusher-js's settings, plus Clarion's (backoff,
 * recovery, fallback, tab sharing, offline queue). Returns a Vue plugin; ``app.use()`` it to see
 * the Pinia store in devtools, or only call it, as configureEcho() is called.
 */
export function createClarion<T extends BroadcastDriver = BroadcastDriver>(options: ClarionOptions<T>): ClarionPlugin {
  config = options as ClarionOptions
  if (client !== null) {
    client.dispose()
    client = null
  }
  return {
    install(app: App): void {
      app.provide(CLIENT_KEY, getClient())
      const pinia = (app.config.globalProperties as { $pinia?: unknown }).$pinia
      // Made now, so devtools shows it from the start; the app's Pinia must be installed first.
      if (pinia !== undefined) useClarionStore(pinia as Parameters<typeof useClarionStore>[0])
    },
    get client(): ClarionClient {
      return getClient()
    },
  }
}

/** @laravel/echo-vue's configureEcho: the same call, Clarion's client behind it. */
export const configureEcho: <T extends BroadcastDriver>(options: ClarionOptions<T>) => ClarionPlugin = createClarion

export const CLIENT_KEY = Symbol('clarion-vue client')

export const echoIsConfigured = (): boolean => config !== null

/** The client, made from the configuration on first use. */
export function getClient(): ClarionClient {
  if (client !== null) return client
  if (config === null) {
    throw new Error(
      'Echo has not been configured. Please call `configureEcho()` with your configuration options before using Echo.',
    )
  }
  client = new ClarionClient(config)
  return client
}

/** The laravel-echo instance, as @laravel/echo-vue's echo() returns it. */
export const echo = <T extends BroadcastDriver>(): Echo<T> => getClient().echo as unknown as Echo<T>

/** Forgets the configuration and closes the client (tests, hot module replacement). */
export function resetClarion(): void {
  client?.dispose()
  client = null
  config = null
}
