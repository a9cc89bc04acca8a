// The @laravel/echo-vue example in examples/echo-vue-orders, against a real `clarion serve`. Vitest
// runs this file twice: on @laravel/echo-vue itself, and with that import resolved to clarion-vue
// (vitest.config.ts). The same tests must pass both times.
import * as library from '@laravel/echo-vue'
import { flushPromises, mount } from '@vue/test-utils'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import Announcements from '../../examples/echo-vue-orders/Announcements.vue'
import { setupEcho } from '../../examples/echo-vue-orders/echo'
import OrderFeed from '../../examples/echo-vue-orders/OrderFeed.vue'
// @ts-expect-error the harness is plain JavaScript for node --test
import { startBackend } from '../harness/backend.mjs'
// @ts-expect-error the harness is plain JavaScript for node --test
import { APP, apiCall, eventually, publish, startClarion } from '../harness/clarion.mjs'

type Server = { url: string; port: number; stop: () => Promise<void> }
type Backend = { url: string; close: () => Promise<void> }

let server: Server
let backend: Backend

beforeAll(async () => {
  server = await startClarion()
  backend = await startBackend({ clarion: () => server.url })
  setupEcho({ key: APP.key, host: '127.0.0.1', port: server.port, authEndpoint: `${backend.url}/broadcasting/auth` })
})

afterAll(async () => {
  await backend?.close()
  await server?.stop()
})

async function subscribers(channel: string): Promise<number> {
  const { body } = await apiCall(server.url, 'GET', `/apps/${APP.id}/channels/${channel}`, undefined, { info: 'subscription_count' })
  return body?.subscription_count ?? 0
}

async function until(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  await eventually(async () => {
    await flushPromises()
    return check()
  }, what)
}

describe('the echo-vue orders example', () => {
  it(`runs on ${process.env.DROPIN_LIBRARY}`, () => {
    expect('createClarion' in library).toBe(process.env.DROPIN_LIBRARY === 'clarion-vue')
  })

  it('shows each order shipped on the user’s private channel, in order', async () => {
    const feed = mount(OrderFeed, { props: { userId: 101 } })
    await until(async () => (await subscribers('private-orders.101')) === 1, 'the subscription')
    for (const id of [1, 2, 3]) await publish(server.url, 'private-orders.101', 'OrderShipped', { id, total: id * 10 })
    await until(() => feed.findAll('[data-testid=order]').length === 3, 'three orders')
    expect(feed.findAll('[data-testid=order]').map((li) => li.text())).toEqual(['#1: 10', '#2: 20', '#3: 30'])
    expect(feed.find('[data-testid=status]').text()).toBe('connected')
    feed.unmount()
    await until(async () => (await subscribers('private-orders.101')) === 0, 'the channel left on unmount')
  })

  it('two components on one channel share it; it stays until the last one unmounts', async () => {
    const one = mount(OrderFeed, { props: { userId: 102 } })
    const two = mount(OrderFeed, { props: { userId: 102 } })
    await until(async () => (await subscribers('private-orders.102')) === 1, 'one subscription for both')
    await publish(server.url, 'private-orders.102', 'OrderShipped', { id: 7, total: 70 })
    await until(() => one.findAll('[data-testid=order]').length === 1 && two.findAll('[data-testid=order]').length === 1, 'both got it')
    one.unmount()
    await publish(server.url, 'private-orders.102', 'OrderShipped', { id: 8, total: 80 })
    await until(() => two.findAll('[data-testid=order]').length === 2, 'the other still gets events')
    expect(await subscribers('private-orders.102')).toBe(1)
    two.unmount()
    await until(async () => (await subscribers('private-orders.102')) === 0, 'left after the last')
  })

  it('a public channel’s listener can be paused and resumed without leaving', async () => {
    const board = mount(Announcements)
    const witness = mount(Announcements) // keeps listening: shows when an event has arrived
    const texts = (w: typeof board) => w.findAll('[data-testid=announcement]').map((p) => p.text())
    await until(async () => (await subscribers('announcements')) === 1, 'the public subscription')
    await publish(server.url, 'announcements', 'posted', { text: 'one' })
    await until(() => texts(board).length === 1, 'the first announcement')
    await board.find('[data-testid=toggle]').trigger('click')
    await publish(server.url, 'announcements', 'posted', { text: 'missed while paused' })
    await until(() => texts(witness).length === 2, 'the paused one delivered (to the witness)')
    await board.find('[data-testid=toggle]').trigger('click')
    await publish(server.url, 'announcements', 'posted', { text: 'two' })
    await until(() => texts(witness).length === 3, 'the last one delivered')
    expect(texts(board)).toEqual(['one', 'two'])
    expect(await subscribers('announcements')).toBe(1)
    board.unmount()
    witness.unmount()
  })
})
