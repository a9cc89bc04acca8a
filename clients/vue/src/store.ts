// The Pinia store: the client's state (connection, socket id, attempt, last error, subscriptions
// with their status, position and last event, telemetry), inspectable in Vue devtools.

import { defineStore } from 'pinia'
import { computed, toRefs } from 'vue'
import { getClient } from './config'

export const useClarionStore = defineStore('clarion', () => {
  const client = getClient()
  const state = toRefs(client.state)
  const connected = computed(() => client.state.status === 'connected')
  return {
    ...state,
    connected,
    connect: (): void => client.connect(),
    disconnect: (): void => client.disconnect(),
  }
})
