// The composables and the Pinia store, mounted with @vue/test-utils, on pusher-js over fake
// sockets: reference counting across components, the dependency fix (rebind without leaving), use
// outside setup(), the status with "reconnecting", and the store's view of it all.
import { mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { defineComponent, effectScope, h, nextTick, ref } from 'vue'
import {
  configureEcho,
  createClarion,
  echo,
  echoIsConfigured,
  resetClarion,
  useChannel,
  useClarion,
  useClarionStore,
  useConnectionStatus,
  useEcho,
  useEchoModel,
  useEchoPresence,
  useEchoPublic,
  useSocketId,
  syncCache,
  withSocketId,
  axiosToOthers,
} from '../../src/index'
import { FakeSocket, fakeOptions, useFakeSockets } from './fake-socket'

let restore: () => void

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
  vi.spyOn(Math, 'random').mockReturnValue(0)
  restore = useFakeSockets()
})

afterEach(() => {
  resetClarion()
  restore()
  vi.restoreAllMocks()
  vi.useRealTimers()
})

const settle = async (): Promise<void> => {
  for (let i = 0; i < 3; i++) await vi.advanceTimersByTimeAsync(0)
}

async function connect(): Promise<FakeSocket> {
  useClarion()
  await settle()
  const socket = FakeSocket.last
  socket.accept('7.7')
  await settle()
  return socket
}

function feed(channelName: string, event: string, into: unknown[], deps?: () => unknown[]) {
  return defineComponent({
    setup() {
      useEcho(channelName, event, (payload: unknown) => into.push(payload), deps?.())
      return () => h('div')
    },
  })
}

describe('reference counting', () => {
  it('components share one subscription; the channel is left when the last one unmounts', async () => {
    configureEcho(fakeOptions() as never)
    const socket = await connect()
    const a: unknown[] = []
    const b: unknown[] = []
    const one = mount(feed('orders', '.updated', a))
    const two = mount(feed('orders', '.updated', b))
    await settle()
    expect(socket.subscribes().map((d) => d.channel)).toEqual(['private-orders'])
    expect(useClarion().refs('private-orders')).toBe(2)
    expect(useClarion().state.subscriptions['private-orders']?.refs).toBe(2)
    socket.succeed('private-orders')
    socket.event('private-orders', 'updated', { id: 1 })
    await settle()
    expect([a, b]).toEqual([[{ id: 1 }], [{ id: 1 }]])

    one.unmount()
    await settle()
    expect(socket.sentOf('pusher:unsubscribe')).toEqual([])
    socket.event('private-orders', 'updated', { id: 2 })
    await settle()
    expect([a.length, b.length]).toEqual([1, 2])

    two.unmount()
    await settle()
    expect(socket.sentOf('pusher:unsubscribe').map((f) => (f.data as { channel: string }).channel)).toEqual(['private-orders'])
    expect(useClarion().state.subscriptions['private-orders']).toBeUndefined()
  })

  it('a change of dependencies rebinds the listener without leaving the channel (no gap)', async () => {
    configureEcho(fakeOptions() as never)
    const socket = await connect()
    const got: unknown[] = []
    const filter = ref(1)
    const wrapper = mount(feed('orders', '.updated', got, () => [filter]))
    await settle()
    socket.succeed('private-orders')
    filter.value = 2
    await nextTick()
    await settle()
    expect(socket.sentOf('pusher:unsubscribe')).toEqual([])
    expect(socket.subscribes()).toHaveLength(1)
    socket.event('private-orders', 'updated', { id: 3 })
    await settle()
    expect(got).toEqual([{ id: 3 }]) // once: the old binding is gone, the new one is there
    wrapper.unmount()
  })
})

describe('outside setup()', () => {
  it('listens at once and stop() undoes everything', async () => {
    configureEcho(fakeOptions() as never)
    const socket = await connect()
    const got: unknown[] = []
    const handle = useEcho('orders', '.updated', (p: unknown) => got.push(p))
    await settle()
    socket.succeed('private-orders')
    socket.event('private-orders', 'updated', { id: 1 })
    await settle()
    handle.stop()
    await settle()
    socket.event('private-orders', 'updated', { id: 2 })
    await settle()
    expect(got).toEqual([{ id: 1 }])
    expect(socket.sentOf('pusher:unsubscribe')).toHaveLength(1)
    handle.stop() // twice is harmless
    expect(useClarion().refs('private-orders')).toBe(0)
  })

  it('inside an effect scope, ends with the scope', async () => {
    configureEcho(fakeOptions() as never)
    const socket = await connect()
    const scope = effectScope()
    scope.run(() => useEchoPublic('news', '.posted', () => {}))
    await settle()
    expect(socket.subscribes().map((d) => d.channel)).toEqual(['news'])
    socket.succeed('news')
    scope.stop()
    await settle()
    expect(socket.sentOf('pusher:unsubscribe')).toHaveLength(1)
  })
})

describe('echo-vue’s API', () => {
  it('configureEcho / echo / echoIsConfigured behave as in @laravel/echo-vue', () => {
    expect(echoIsConfigured()).toBe(false)
    expect(() => echo()).toThrow(/configureEcho/)
    configureEcho(fakeOptions() as never)
    expect(echoIsConfigured()).toBe(true)
    expect(typeof echo().private).toBe('function')
  })

  it('useEchoModel listens on the model’s private channel for dotted model events', async () => {
    configureEcho(fakeOptions() as never)
    const socket = await connect()
    const got: unknown[] = []
    const handle = useEchoModel('App.Models.User', 5, ['UserUpdated'], (p: unknown) => got.push(p))
    await settle()
    socket.succeed('private-App.Models.User.5')
    socket.event('private-App.Models.User.5', 'UserUpdated', { model: { id: 5 } })
    await settle()
    expect(got).toEqual([{ model: { id: 5 } }])
    handle.stop()
  })

  it('useEchoPresence and useChannel join the right channels', async () => {
    configureEcho(fakeOptions() as never)
    const socket = await connect()
    const presence = useEchoPresence('room.1', '.moved', () => {})
    const plain = useChannel('orders', 'public')
    await settle()
    expect(socket.subscribes().map((d) => d.channel)).toEqual(['presence-room.1', 'orders'])
    presence.stop()
    plain.stop()
  })
})

describe('status and socket id', () => {
  it('useConnectionStatus reports reconnecting after a drop and connected again after', async () => {
    configureEcho(fakeOptions({ backoff: { base: 1000, cap: 8000, retryJitter: 0 } }) as never)
    const socket = await connect()
    const seen: string[] = []
    const status = useConnectionStatus()
    const id = useSocketId()
    expect(status.value).toBe('connected')
    expect(id.value).toBe('7.7')
    useClarion().onStatus((s) => seen.push(s))
    socket.drop(1006)
    await settle()
    expect(status.value).toBe('reconnecting')
    expect(id.value).toBeUndefined()
    await vi.advanceTimersByTimeAsync(500)
    FakeSocket.last.accept('8.8')
    await settle()
    expect(status.value).toBe('connected')
    expect(id.value).toBe('8.8')
    expect(seen).toEqual(['reconnecting', 'connected'])
    expect(echo().connectionStatus()).toBe('connected')
  })
})

describe('the Pinia store', () => {
  it('shows the connection, subscriptions with status, position and last event, and telemetry', async () => {
    const pinia = createPinia()
    setActivePinia(pinia)
    configureEcho(fakeOptions() as never)
    const socket = await connect()
    const store = useClarionStore()
    expect(store.status).toBe('connected')
    expect(store.socketId).toBe('7.7')
    expect(store.role).toBe('solo')
    const handle = useEcho('orders', '.updated', () => {})
    await settle()
    expect(store.subscriptions['private-orders']).toMatchObject({ status: 'pending', refs: 1 })
    socket.succeed('private-orders')
    socket.event('private-orders', 'updated', { id: 1 }, { epoch: 'E', serial: 4 })
    await settle()
    expect(store.subscriptions['private-orders']).toMatchObject({
      status: 'subscribed',
      epoch: 'E',
      serial: 4,
      lastEvent: { event: 'updated', data: { id: 1 } },
    })
    expect(store.telemetry.connects).toBe(1)
    handle.stop()
  })

  it('is installed with the plugin when the app has Pinia', async () => {
    const pinia = createPinia()
    const plugin = createClarion(fakeOptions() as never)
    const App = defineComponent({ setup: () => () => h('div') })
    mount(App, { global: { plugins: [pinia, plugin] } })
    expect(pinia.state.value.clarion).toBeDefined()
  })
})

describe('the bus, toOthers and cache coordination', () => {
  it('re-emits every channel event as channel:event', async () => {
    configureEcho(fakeOptions() as never)
    const socket = await connect()
    const got: unknown[] = []
    useClarion().bus.on('private-orders:updated', (e) => got.push(e))
    const handle = useEcho('orders', '.updated', () => {})
    await settle()
    socket.succeed('private-orders')
    socket.event('private-orders', 'updated', { id: 9 })
    await settle()
    expect(got).toEqual([{ channel: 'private-orders', event: 'updated', data: { id: 9 } }])
    handle.stop()
  })

  it('adds X-Socket-ID to fetch and axios requests once connected', async () => {
    configureEcho(fakeOptions() as never)
    expect(new Headers(withSocketId().headers).get('X-Socket-ID')).toBeNull()
    await connect()
    expect(new Headers(withSocketId({ headers: { A: 'b' } }).headers).get('X-Socket-ID')).toBe('7.7')
    let interceptor: ((c: { headers?: Record<string, unknown> }) => { headers?: Record<string, unknown> }) | undefined
    axiosToOthers({ interceptors: { request: { use: (f) => ((interceptor = f as never), 1) } } })
    expect(interceptor!({ headers: {} }).headers).toEqual({ 'X-Socket-ID': '7.7' })
  })

  it('patches cached data on an event, and marks it stale when the channel had to resync', async () => {
    configureEcho(fakeOptions() as never)
    const socket = await connect()
    const categories = ref<Record<number, string>>({ 1: 'old' })
    const stale: string[] = []
    syncCache([
      {
        channel: 'private-tenant.7',
        events: '.category.updated',
        patch: (p) => {
          const { id, name } = p as { id: number; name: string }
          categories.value[id] = name
        },
        invalidate: (why) => stale.push('resync' in why ? why.resync.reason : why.event),
      },
    ])
    const handle = useEcho('tenant.7', '.category.updated', () => {})
    await settle()
    socket.succeed('private-tenant.7')
    socket.event('private-tenant.7', 'category.updated', { id: 1, name: 'new' }, { epoch: 'E', serial: 1 })
    socket.event('private-tenant.7', 'category.updated', { id: 1, name: 'newer' }, { epoch: 'E', serial: 3 })
    await settle()
    expect(categories.value[1]).toBe('newer')
    expect(stale).toEqual(['gap'])
    handle.stop()
  })
})
