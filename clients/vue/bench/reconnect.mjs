// How long browsers take to come back after a server restart: clarion-vue's backoff against stock
// pusher-js's fixed delays, against one real `clarion serve` that is killed and started again.
//
//   node bench/reconnect.mjs [--clients 20] [--outage 3] [--signal KILL|TERM]
//
// Prints, per library, the time from the restarted server's "listening" line to each client
// being connected again (median, p95, max). Run it on a quiet machine; it is not part of the tests.
import { parseArgs } from 'node:util'
import PusherJs from 'pusher-js'
import { ClarionClient } from '../dist/clarion-vue.js'
import { APP, eventually, startClarion } from '../test/harness/clarion.mjs'

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '20' },
    outage: { type: 'string', default: '3' },
    signal: { type: 'string', default: 'KILL' },
  },
})
const count = Number(values.clients)
const outageMs = Number(values.outage) * 1000

let server = await startClarion()
const port = server.port
const common = { wsHost: '127.0.0.1', wsPort: port, wssPort: port, forceTLS: false, enabledTransports: ['ws'] }

PusherJs.logToConsole = false
const stock = Array.from({ length: count }, () => new PusherJs(APP.key, { ...common, cluster: 'clarion' }))
const clarion = Array.from(
  { length: count },
  () => new ClarionClient({ broadcaster: 'reverb', key: APP.key, ...common, logger: () => {} }),
)
const connected = {
  'pusher-js': () => stock.map((p) => p.connection.state === 'connected'),
  'clarion-vue': () => clarion.map((c) => c.status() === 'connected'),
}
await eventually(() => Object.values(connected).every((f) => f().every(Boolean)), 'every client connected', 60_000)

if (values.signal === 'TERM') await server.stop()
else await server.kill()
await eventually(() => Object.values(connected).every((f) => f().every((up) => !up)), 'every client noticing', 60_000)
await new Promise((r) => setTimeout(r, outageMs))
server = await startClarion({ port })
const restarted = performance.now()

const back = { 'pusher-js': new Array(count).fill(null), 'clarion-vue': new Array(count).fill(null) }
await eventually(
  () => {
    for (const [name, check] of Object.entries(connected)) {
      check().forEach((up, i) => {
        if (up && back[name][i] === null) back[name][i] = performance.now() - restarted
      })
    }
    return Object.values(back).every((times) => times.every((t) => t !== null))
  },
  'every client back',
  180_000,
)

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
console.log(`${count} clients per library, outage ${values.outage} s, server stopped with SIG${values.signal}`)
console.log('library       median_ms   p95_ms   max_ms')
for (const [name, times] of Object.entries(back)) {
  const sorted = [...times].sort((a, b) => a - b)
  const row = [quantile(sorted, 0.5), quantile(sorted, 0.95), sorted.at(-1)].map((t) => t.toFixed(0).padStart(8))
  console.log(`${name.padEnd(12)} ${row.join(' ')}`)
}

for (const p of stock) p.disconnect()
for (const c of clarion) c.dispose()
await server.stop()
