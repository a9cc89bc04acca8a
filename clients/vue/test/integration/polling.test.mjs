// The polling fallback against a real `clarion serve`: WebSockets blocked (a proxy that is shut),
// history read through the app backend's /broadcasting/history route, then the switch back once
// WebSockets work, with every event delivered once, in order, throughout.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { useEcho } from '../../dist/clarion-vue.js'
import { eventually, publish, startClarion } from '../harness/clarion.mjs'
import { startBackend } from '../harness/backend.mjs'
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
