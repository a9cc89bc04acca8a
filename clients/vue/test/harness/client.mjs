// The package as an app gets it (its built dist/), configured for a test server.
import { effectScope } from 'vue'
import { createClarion, resetClarion, useClarion } from '../../dist/clarion-vue.js'
import { APP } from './clarion.mjs'

/** Configures clarion-vue for `server`, with `backend`'s auth route; returns the client and a scope to run composables in. */
export function configure(server, backend, extra = {}) {
  const logs = []
  createClarion({
    broadcaster: 'reverb',
    key: APP.key,
    wsHost: '127.0.0.1',
    wsPort: server.port,
    wssPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    authEndpoint: `${backend.url}/broadcasting/auth`,
    logger: (message) => logs.push(message),
    ...extra,
  })
  const client = useClarion()
  const scope = effectScope()
  return {
    client,
    logs,
    run: (fn) => scope.run(fn),
    close() {
      scope.stop()
      resetClarion()
    },
  }
}
