// WebSockets blocked: the browsers reach Clarion through a proxy that refuses the upgrade (403),
// as a corporate proxy does. The page falls back to polling (the channels' history, read through
// the app's /broadcasting/history), updates still arrive, and it returns to WebSockets once the
// proxy lets them through.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import {
  apiSession,
  eventually,
  freePort,
  launchBrowser,
  shot,
  signIn,
  startApp,
  startClarion,
  startUpgradeProxy,
  state,
  tree,
} from './harness.mjs'

let clarion
let proxy
let app
let browser

before(async () => {
  clarion = await startClarion(await freePort())
  proxy = await startUpgradeProxy(clarion.port)
  app = await startApp(clarion.port, { wsPort: proxy.port })
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await app?.stop()
  await proxy?.close()
  await clarion?.stop()
})

test('with WebSockets refused the page polls, updates still arrive, and it returns to WebSockets', async () => {
  const bob = await browser.newContext()
  const sockets = []
  bob.on('page', (page) => page.on('websocket', (ws) => sockets.push(ws.url())))
  const api = await apiSession(app, 'alice@acme.test')
  const member = await signIn(bob, app, 'bob@acme.test')
  await member.evaluate(() => (window.__sameDocument = true))
  assert.ok(sockets.some((url) => url.includes(`:${proxy.port}/app/`)), 'the page reaches Clarion through the proxy')

  proxy.block()
  await eventually(async () => (await state(member)) === 'polling', 'polling', 60_000)
  await shot(member, 'bob-polling')
  // The first history read learns where each channel stands; changes after it are delivered.
  await eventually(() => member.evaluate(() => window.Clarion.state.telemetry.polls > 0), 'the first poll')
  assert.equal((await api.call('POST', '/api/categories', { name: 'Polled one' })).status, 201)
  assert.equal((await api.call('POST', '/api/categories', { name: 'Polled two' })).status, 201)
  await eventually(async () => {
    const t = await tree(member)
    return t['Polled one'] === '' && t['Polled two'] === ''
  }, 'updates by polling')
  assert.equal(await state(member), 'polling')

  proxy.allow()
  await eventually(async () => (await state(member)) === 'connected', 'back on WebSockets', 60_000)
  assert.equal(await member.evaluate(() => window.Clarion.state.transport), 'websocket')
  assert.equal((await api.call('POST', '/api/categories', { name: 'Live again' })).status, 201)
  await eventually(async () => (await tree(member))['Live again'] === '', 'a live update over the socket')
  const names = Object.keys(await tree(member))
  assert.equal(names.filter((n) => n === 'Polled one').length, 1)
  assert.ok(await member.evaluate(() => window.__sameDocument === true), 'the page was not reloaded')
  await bob.close()
})
