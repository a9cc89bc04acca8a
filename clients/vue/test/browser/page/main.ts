// A test page, built by Vite as an app would build it, using clarion-vue's dist: one channel,
// tab sharing on, and what it received exposed for the browser test to read.
import { createApp, h, ref } from 'vue'
import { createPinia } from 'pinia'
import { createClarion, useClarion, useClarionStore, useEcho } from 'clarion-vue'

const params = new URLSearchParams(location.search)
const received: number[] = []
const count = ref(0)

const pinia = createPinia()
const clarion = createClarion({
  broadcaster: 'reverb',
  key: params.get('key') ?? '',
  wsHost: '127.0.0.1',
  wsPort: Number(params.get('port')),
  wssPort: Number(params.get('port')),
  forceTLS: false,
  enabledTransports: ['ws'],
  authEndpoint: '/broadcasting/auth',
  shareTabs: true,
  backoff: { base: 200, cap: 1000, retryJitter: 100 },
})

const app = createApp({
  setup() {
    const store = useClarionStore()
    useEcho<{ n: number }>(params.get('channel') ?? 'ticks', '.tick', (payload) => {
      received.push(payload.n)
      count.value = received.length
    })
    return () =>
      h('main', [
        h('p', { 'data-testid': 'role' }, store.role),
        h('p', { 'data-testid': 'status' }, store.status),
        h('p', { 'data-testid': 'count' }, String(count.value)),
      ])
  },
})
app.use(pinia)
app.use(clarion)
app.mount('#app')

declare global {
  interface Window {
    clarionTest: { received: number[]; state: () => Record<string, unknown> }
  }
}

window.clarionTest = {
  received,
  state: () => {
    const client = useClarion()
    const channel = `private-${params.get('channel') ?? 'ticks'}`
    return {
      role: client.state.role,
      status: client.state.status,
      socketId: client.state.socketId,
      subscription: client.state.subscriptions[channel]?.status ?? null,
    }
  },
}
