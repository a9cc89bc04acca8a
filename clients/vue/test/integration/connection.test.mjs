// clarion-vue's connection handling against a real `clarion serve`: restarts and close codes,
// recovery of a channel that had no event yet, resync when history is gone, auth headers asked
// afresh on every authorization, and whispers made while offline.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { ClarionClient, useEcho } from '../../dist/clarion-vue.js'
import { APP, eventually, publish, startClarion, uniquePrefix } from '../harness/clarion.mjs'
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

const redis = () => ({ CLARION_SCALING: 'redis', CLARION_SCALING_PREFIX: uniquePrefix() })

const subscribed = (app, channel) =>
  eventually(() => app.client.state.subscriptions[channel]?.status === 'subscribed', `${channel} subscribed`)

test('a channel that had no event yet still gets what was published while the client was away', async () => {
  const env = redis()
  let server = await startClarion({ env })
  const app = configure(server, backend, FAST)
  try {
    const got = []
    app.run(() => useEcho('quiet.1', '.note', (payload) => got.push(payload.n)))
    await subscribed(app, 'private-quiet.1')
    // Known empty once Clarion answered where it stands (serial 0). Killed before that answer, the
    // client could not tell the outage's events from older ones: it resyncs (unit-tested).
    await eventually(() => app.client.state.subscriptions['private-quiet.1']?.serial === 0, 'the channel known empty')
    await server.kill()
    await eventually(() => app.client.state.status === 'reconnecting', 'reconnecting')
    const other = await startClarion({ env })
    for (let n = 1; n <= 3; n++) await publish(other.url, 'private-quiet.1', 'note', { n })
    await other.stop()
    server = await startClarion({ port: server.port, env })
    const state = () =>
      `got ${JSON.stringify(got)}\nclient ${JSON.stringify(app.client.state)}\nserver:\n${server.output.join('').slice(-4000)}`
    await eventually(() => got.length >= 3, 'the events of the outage', 30_000, state)
    await publish(server.url, 'private-quiet.1', 'note', { n: 4 })
    await eventually(() => got.length >= 4, 'the next live event')
    assert.deepEqual(got, [1, 2, 3, 4])
    assert.equal(app.client.state.telemetry.resyncs, 0)
  } finally {
    app.close()
    await server.kill()
  }
})

test('a server going down cleanly (close 4200) is reconnected to at once, within the small jitter', async () => {
  let server = await startClarion({ env: redis() })
  const app = configure(server, backend, { backoff: { base: 1000, cap: 30_000, retryJitter: 300 } })
  try {
    app.run(() => useEcho('restart.1', '.x', () => {}))
    await subscribed(app, 'private-restart.1')
    const env = server.env
    await server.stop()
    server = await startClarion({ port: server.port, env })
    await eventually(() => app.client.state.status === 'connected' && app.client.state.telemetry.connects >= 2, 'reconnected')
    // The first retry after a 4200 waits at most retryJitter (300 ms); any backoff retry (while
    // the node was not back yet) waits at least base/2 = 500 ms.
    const { delays } = app.client.state.telemetry
    assert.ok(delays.length >= 1)
    assert.ok(delays[0] <= 300, `first delay ${delays[0]}`)
    assert.ok(delays.slice(1).every((d) => d >= 500), `later delays ${delays}`)
  } finally {
    app.close()
    await server.kill()
  }
})

test('when the history is gone (a memory node restarted), the channel resyncs: onResync and the bus say so', async () => {
  let server = await startClarion()
  const resyncs = []
  const app = configure(server, backend, { ...FAST, onResync: (info) => resyncs.push(info) })
  const onBus = []
  app.client.bus.on('resync', (info) => onBus.push(info.channel))
  try {
    const got = []
    app.run(() => useEcho('lost.1', '.e', (payload) => got.push(payload.n)))
    await subscribed(app, 'private-lost.1')
    await publish(server.url, 'private-lost.1', 'e', { n: 1 })
    await eventually(() => got.length === 1, 'the first event')
    // The client stays away until the new node has an event of its own (a new epoch).
    app.client.disconnect()
    await server.kill()
    server = await startClarion({ port: server.port })
    await publish(server.url, 'private-lost.1', 'e', { n: 2 }) // while the client is away
    app.client.connect()
    await eventually(() => resyncs.length === 1, 'the resync', 30_000)
    assert.equal(resyncs[0].channel, 'private-lost.1')
    assert.equal(resyncs[0].reason, 'epoch_changed')
    assert.deepEqual(onBus, ['private-lost.1'])
    const sub = app.client.state.subscriptions['private-lost.1']
    assert.equal(sub.wasRecovering, true)
    assert.equal(sub.recovered, false)
    await publish(server.url, 'private-lost.1', 'e', { n: 3 })
    await eventually(() => got.includes(3), 'live events after the resync')
    assert.deepEqual(got, [1, 3])
  } finally {
    app.close()
    await server.kill()
  }
})

test('the auth headers provider is asked on every (re)authorization, so a refreshed token is sent', async () => {
  let server = await startClarion({ env: redis() })
  let token = 0
  const app = configure(server, backend, { ...FAST, authHeaders: async () => ({ Authorization: `Bearer t${++token}` }) })
  try {
    app.run(() => useEcho('tokens.1', '.e', () => {}))
    await subscribed(app, 'private-tokens.1')
    const env = server.env
    await server.kill()
    server = await startClarion({ port: server.port, env })
    await eventually(
      () => app.client.state.status === 'connected' && app.client.state.subscriptions['private-tokens.1'].status === 'subscribed',
      'subscribed again',
    )
    await eventually(() => authFor('private-tokens.1').length >= 2, 'two authorizations')
    const sent = authFor('private-tokens.1').map((r) => r.headers.authorization)
    assert.equal(new Set(sent).size, sent.length, `every authorization had a fresh token: ${sent}`)
  } finally {
    app.close()
    await server.kill()
  }
})

function authFor(channel) {
  return backend.requests.filter((r) => r.path === '/broadcasting/auth' && r.form.channel_name === channel && r.form.socket_id)
}

test('whispers made while disconnected are queued and sent once the channel is back', async () => {
  let server = await startClarion({ env: redis() })
  // The peer stays connected to another node of the cluster the whole time.
  const peerNode = await startClarion({ env: server.env })
  const app = configure(server, backend, FAST)
  const peer = new ClarionClient({
    broadcaster: 'reverb',
    key: APP.key,
    wsHost: '127.0.0.1',
    wsPort: peerNode.port,
    wssPort: peerNode.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    authEndpoint: `${backend.url}/broadcasting/auth`,
    logger: () => {},
    ...FAST,
  })
  try {
    const heard = []
    peer.echo.private('chat.1').listenForWhisper('typing', (payload) => heard.push(payload.n))
    const handle = app.run(() => useEcho('chat.1', [], () => {}))
    await subscribed(app, 'private-chat.1')
    await eventually(() => peer.state.subscriptions['private-chat.1']?.status === 'subscribed', 'peer subscribed')
    handle.channel().whisper('typing', { n: 1 })
    await eventually(() => heard.length === 1, 'the live whisper')

    const env = server.env
    await server.kill()
    await eventually(() => app.client.state.status === 'reconnecting', 'reconnecting')
    handle.channel().whisper('typing', { n: 2 })
    handle.channel().whisper('typing', { n: 3 })
    assert.equal(app.client.state.telemetry.queued, 2)
    server = await startClarion({ port: server.port, env })
    await eventually(() => heard.length === 3, 'the queued whispers', 30_000)
    assert.deepEqual(heard, [1, 2, 3])
    assert.equal(app.client.state.telemetry.flushed, 2)
    assert.equal(app.client.state.telemetry.dropped, 0)
  } finally {
    peer.dispose()
    app.close()
    await server.kill()
    await peerNode.kill()
  }
})
