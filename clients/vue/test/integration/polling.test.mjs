// The polling fallback against a real `clarion serve`: WebSockets blocked (a proxy that is shut),
// history read through the app backend's /broadcasting/history route, then the switch back once
// WebSockets work, with every event delivered once, in order, throughout.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { useEcho } from '../../dist/clarion-vue.js'
import { APP, eventually, publish, startClarion } from '../harness/clarion.mjs'
import { startBackend, startSdkBackend } from '../harness/backend.mjs'
import { configure } from '../harness/client.mjs'
import { startProxy } from '../harness/proxy.mjs'

test('with WebSockets blocked the client polls history, then switches back, delivering each event once', async () => {
  const server = await startClarion()
  const backend = await startBackend({ clarion: () => server.url })
  const proxy = await startProxy(server)
  await proxy.shut()
  const app = configure({ port: proxy.port }, backend, {
    backoff: { base: 200, cap: 800, retryJitter: 100 },
    fallback: { after: 2, interval: 150, historyEndpoint: `${backend.url}/broadcasting/history` },
  })
  const statuses = []
  app.client.onStatus((status) => statuses.push(status))
  try {
    const got = []
    app.run(() => useEcho('feed.1', '.item', (payload) => got.push(payload.n)))
    await eventually(() => app.client.state.status === 'polling', 'polling')
    assert.equal(app.client.state.transport, 'polling')
    // The first read only learns where the channel stands; wait for it before publishing.
    await eventually(() => app.client.state.subscriptions['private-feed.1']?.serial !== null, 'the baseline read')
    for (let n = 1; n <= 3; n++) await publish(server.url, 'private-feed.1', 'item', { n })
    await eventually(() => got.length === 3, 'events by polling')
    assert.deepEqual(got, [1, 2, 3])

    // WebSockets come back while events keep coming: the probe connects, polling stops, the
    // subscription resumes from the polled position.
    await proxy.open()
    let n = 4
    const deadline = Date.now() + 30_000
    while (app.client.state.status !== 'connected' && Date.now() < deadline) {
      await publish(server.url, 'private-feed.1', 'item', { n: n++ })
      await new Promise((r) => setTimeout(r, 50))
    }
    assert.equal(app.client.state.status, 'connected')
    for (let k = 0; k < 3; k++) await publish(server.url, 'private-feed.1', 'item', { n: n++ })
    const last = n - 1
    await eventually(() => got.length >= last, 'every event')
    assert.deepEqual(got, Array.from({ length: last }, (_, i) => i + 1))
    assert.equal(app.client.state.transport, 'websocket')
    assert.ok(app.client.state.telemetry.polls > 0)
    assert.ok(statuses.includes('polling') && statuses.at(-1) === 'connected', `${statuses}`)
    assert.ok(backend.requests.some((r) => r.path === '/broadcasting/history'))
  } finally {
    app.close()
    await proxy.shut().catch(() => {})
    await backend.close()
    await server.kill()
  }
})

test("polling straight from Clarion's history endpoint with tokens from the Python SDK's auth route", async () => {
  // The whole path of a direct read: clarion-vue asks the app's auth route (the Python SDK's
  // Authorizer under Starlette) for a history token, then reads Clarion's history endpoint with it.
  // No history route of the app's is configured, so a polled event can have come only that way.
  const server = await startClarion()
  const backend = await startSdkBackend(server.url)
  const proxy = await startProxy(server)
  await proxy.shut()
  const app = configure({ port: proxy.port }, backend, {
    backoff: { base: 200, cap: 800, retryJitter: 100 },
    fallback: { after: 2, interval: 150, appId: APP.id, httpBase: server.url },
  })
  try {
    const got = []
    const secrets = []
    app.run(() => {
      useEcho('feed.1', '.item', (payload) => got.push(payload.n))
      useEcho('secret.1', '.item', (payload) => secrets.push(payload.n))
    })
    const subs = () => app.client.state.subscriptions
    const report = () => `${JSON.stringify(subs())}\n${backend.output.join('')}`
    await eventually(() => app.client.state.status === 'polling', 'polling', 20_000, report)
    await eventually(() => subs()['private-feed.1']?.serial !== null, 'the baseline read', 20_000, report)
    // The SDK's guard refuses secret.1, so no token is issued and the channel is not polled.
    await eventually(() => subs()['private-secret.1']?.status === 'unavailable', 'the refusal', 20_000, report)
    for (let n = 1; n <= 3; n++) {
      await publish(server.url, 'private-feed.1', 'item', { n })
      await publish(server.url, 'private-secret.1', 'item', { n })
    }
    await eventually(() => got.length === 3, 'events by polling', 20_000, report)
    assert.deepEqual(got, [1, 2, 3])
    assert.equal(app.client.state.transport, 'polling')
    // Polls after the three events: still nothing from the refused channel.
    const polls = app.client.state.telemetry.polls
    await eventually(() => app.client.state.telemetry.polls >= polls + 2, 'two more polls', 20_000, report)
    assert.deepEqual(secrets, [])
  } finally {
    app.close()
    await proxy.shut().catch(() => {})
    await backend.close()
    await server.kill()
  }
})
