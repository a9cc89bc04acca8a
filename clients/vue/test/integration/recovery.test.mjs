// clarion-vue against real Clarion nodes joined through a real Redis: a node is killed, events are
// published into the other during the outage, the node comes back, and the client gets every
// event once, in order, through its own reconnect and resume.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { useEcho } from '../../dist/clarion-vue.js'
import { eventually, publish, startClarion, uniquePrefix } from '../harness/clarion.mjs'
import { startBackend } from '../harness/backend.mjs'
import { configure } from '../harness/client.mjs'

const FAST = { backoff: { base: 200, cap: 1000, retryJitter: 200 } }

let backend
before(async () => {
  backend = await startBackend({ clarion: () => 'http://127.0.0.1:1' })
})
after(async () => {
  await backend.close()
})

function redisEnv(prefix) {
  return { CLARION_SCALING: 'redis', CLARION_SCALING_PREFIX: prefix, CLARION_REDIS_URL: 'redis://127.0.0.1:6379/0' }
}

test('events published into a second node while the first is down arrive once, in order, after it restarts', async () => {
  const env = redisEnv(uniquePrefix())
  let nodeA = await startClarion({ env })
  const nodeB = await startClarion({ env })
  const app = configure(nodeA, backend, FAST)
  try {
    const got = []
    app.run(() => useEcho('orders.7', '.updated', (payload) => got.push(payload.n)))
    await eventually(() => app.client.state.subscriptions['private-orders.7']?.status === 'subscribed', 'the subscription')
    await publish(nodeB.url, 'private-orders.7', 'updated', { n: 1 })
    await eventually(() => got.length === 1, 'the first event')

    await nodeA.kill()
    await eventually(() => app.client.state.status === 'reconnecting', 'reconnecting')
    for (let n = 2; n <= 6; n++) await publish(nodeB.url, 'private-orders.7', 'updated', { n })
    nodeA = await startClarion({ port: nodeA.port, env })

    await eventually(() => got.length >= 6, 'the missed events', 30_000)
    await publish(nodeB.url, 'private-orders.7', 'updated', { n: 7 })
    await eventually(() => got.length >= 7, 'the live event after recovery')
    assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7])
    const sub = app.client.state.subscriptions['private-orders.7']
    assert.equal(sub.wasRecovering, true)
    assert.equal(sub.recovered, true)
    assert.equal(app.client.state.status, 'connected')
    assert.ok(app.client.state.telemetry.connects >= 2)
    assert.ok(app.client.state.telemetry.failures >= 1)
  } finally {
    app.close()
    await nodeA.kill()
    await nodeB.kill()
  }
})
