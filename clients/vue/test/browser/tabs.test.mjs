// Two tabs of one origin in real Chromium (Debian's, through playwright-core), sharing one socket
// through clarion-vue's leader election: one socket for both, both get every event, and after the
// leader tab closes the other takes over and gets everything, once, in order.
import assert from 'node:assert/strict'
import { mkdir } from 'node:fs/promises'
import { resolve } from 'node:path'
import { after, before, test } from 'node:test'
import { chromium } from 'playwright-core'
import { build } from 'vite'
import { startBackend } from '../harness/backend.mjs'
import { APP, eventually, publish, startClarion } from '../harness/clarion.mjs'

const HERE = import.meta.dirname
const PAGE = resolve(HERE, '../../test-results/browser-page')
const SHOTS = resolve(HERE, '../../test-results/screenshots')
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

let server
let backend
let browser

before(async () => {
  await build({ configFile: resolve(HERE, 'vite.config.ts') })
  await mkdir(SHOTS, { recursive: true })
  server = await startClarion()
  backend = await startBackend({ clarion: () => server.url, statics: { '/app/': PAGE } })
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: FLAGS })
})

after(async () => {
  await browser?.close()
  await backend?.close()
  await server?.stop()
})

async function metric(name) {
  const text = await (await fetch(`${server.url}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`app_id="${APP.id}"`))
  return line === undefined ? 0 : Number(line.split(' ').at(-1))
}

async function openTab(context, channel, sockets) {
  const page = await context.newPage()
  page.on('websocket', (ws) => sockets.push({ page, url: ws.url() }))
  page.on('pageerror', (error) => console.error('page error:', error))
  await page.goto(`${backend.url}/app/index.html?key=${APP.key}&port=${server.port}&channel=${channel}`)
  return page
}

const state = (page) => page.evaluate(() => window.clarionTest.state())
const received = (page) => page.evaluate(() => [...window.clarionTest.received])

test('two tabs share one socket; both get every event, and still after the leader tab closes', async () => {
  const context = await browser.newContext()
  const channel = `ticks.${Date.now()}`
  const sockets = []
  const first = await openTab(context, channel, sockets)
  await eventually(async () => (await state(first)).subscription === 'subscribed', 'the first tab subscribed')
  const second = await openTab(context, channel, sockets)
  await eventually(async () => (await state(second)).subscription === 'subscribed', 'the second tab subscribed')

  assert.equal((await state(first)).role, 'leader')
  assert.equal((await state(second)).role, 'follower')
  assert.equal((await state(second)).socketId, (await state(first)).socketId)
  assert.equal(sockets.length, 1, 'one WebSocket for both tabs')
  assert.equal(sockets[0].page, first)
  assert.equal(await metric('clarion_connections'), 1)

  const name = `private-${channel}`
  for (let n = 1; n <= 5; n++) await publish(server.url, name, 'tick', { n })
  await eventually(async () => (await received(first)).length === 5 && (await received(second)).length === 5, 'both tabs got 5')
  assert.deepEqual(await received(first), [1, 2, 3, 4, 5])
  assert.deepEqual(await received(second), [1, 2, 3, 4, 5])
  await first.screenshot({ path: resolve(SHOTS, 'tabs-leader.png') })
  await second.screenshot({ path: resolve(SHOTS, 'tabs-follower.png') })

  // The leader tab closes while events keep coming.
  let n = 6
  let publishing = true
  const publisher = (async () => {
    while (publishing) {
      await publish(server.url, name, 'tick', { n: n++ })
      await new Promise((r) => setTimeout(r, 30))
    }
  })()
  await first.close({ runBeforeUnload: true })
  await eventually(async () => {
    const s = await state(second)
    return s.role === 'leader' && s.status === 'connected' && s.subscription === 'subscribed'
  }, 'the second tab taking over')
  const atTakeOver = n
  await eventually(async () => (await received(second)).includes(atTakeOver + 3), 'live events after the take-over')
  publishing = false
  await publisher
  const last = n - 1
  await eventually(async () => (await received(second)).length >= last, 'every event in the second tab')
  assert.deepEqual(await received(second), Array.from({ length: last }, (_, i) => i + 1))
  assert.equal(sockets.length, 2, 'the new leader opened the only other socket')
  assert.equal(sockets[1].page, second)
  await eventually(async () => (await metric('clarion_connections')) === 1, 'one socket open at the server')
  await second.screenshot({ path: resolve(SHOTS, 'tabs-after-handover.png') })
  await context.close()
})
