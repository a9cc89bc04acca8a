// The app backend's broadcasting routes for the tests, as a tiny Node HTTP server: channel auth
// (POST /broadcasting/auth, also history tokens with history=1), user auth, and the history route
// (GET /broadcasting/history) that signs its call to Clarion's HTTP API. It also serves static
// files (the browser tests' pages) from http://127.0.0.1.
import { spawn } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { extname, join, normalize, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { APP, ROOT, announced, apiCall } from './clarion.mjs'

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.map': 'application/json' }

function hmac(text) {
  return createHmac('sha256', APP.secret).update(text).digest('hex')
}

async function readForm(req) {
  const chunks = []
  for await (const chunk of req) chunks.push(chunk)
  const text = Buffer.concat(chunks).toString()
  if ((req.headers['content-type'] ?? '').includes('application/json')) return JSON.parse(text || '{}')
  return Object.fromEntries(new URLSearchParams(text))
}

/**
 * Starts the backend. `clarion()` gives the current Clarion base URL (it may move between
 * restarts). `refuse(channel, headers)` may return a reason to answer 403. `statics` maps URL
 * prefixes to folders.
 */
export async function startBackend({ clarion, refuse = () => undefined, statics = {} } = {}) {
  const requests = []
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    const send = (status, body, headers = {}) => {
      res.writeHead(status, { 'Content-Type': 'application/json', ...headers })
      res.end(JSON.stringify(body))
    }
    try {
      if (req.method === 'POST' && url.pathname === '/broadcasting/auth') {
        const form = await readForm(req)
        requests.push({ path: url.pathname, form, headers: req.headers })
        const channel = form.channel_name
        if (typeof channel !== 'string') return send(400, { error: 'channel_name is required' })
        const refusal = refuse(channel, req.headers)
        if (refusal) return send(403, { error: refusal })
        if (form.history === '1' && !form.socket_id) {
          const expires = Math.floor(Date.now() / 1000) + 300
          return send(200, { history_token: `${expires}:${hmac(`${APP.key}:history:${channel}:${expires}`)}`, expires })
        }
        const socketId = form.socket_id
        if (typeof socketId !== 'string') return send(400, { error: 'socket_id is required' })
        if (channel.startsWith('presence-')) {
          const channelData = JSON.stringify({ user_id: `u-${socketId}`, user_info: { name: 'test' } })
          return send(200, { auth: `${APP.key}:${hmac(`${socketId}:${channel}:${channelData}`)}`, channel_data: channelData })
        }
        return send(200, { auth: `${APP.key}:${hmac(`${socketId}:${channel}`)}` })
      }
      if (req.method === 'GET' && url.pathname === '/broadcasting/history') {
        requests.push({ path: url.pathname, query: Object.fromEntries(url.searchParams), headers: req.headers })
        const channel = url.searchParams.get('channel_name') ?? ''
        const refusal = refuse(channel, req.headers)
        if (refusal) return send(403, { error: refusal })
        const query = {}
        for (const name of ['epoch', 'since', 'limit']) {
          const value = url.searchParams.get(name)
          if (value !== null) query[name] = value
        }
        const answer = await apiCall(clarion(), 'GET', `/apps/${APP.id}/channels/${encodeURIComponent(channel)}/history`, undefined, query)
        return send(answer.status, answer.body)
      }
      for (const [prefix, folder] of Object.entries(statics)) {
        if (req.method === 'GET' && url.pathname.startsWith(prefix)) {
          const path = normalize(join(folder, url.pathname.slice(prefix.length)))
          if (!path.startsWith(folder)) return send(403, { error: 'outside the folder' })
          const body = await readFile(path)
          res.writeHead(200, { 'Content-Type': TYPES[extname(path)] ?? 'application/octet-stream' })
          return res.end(body)
        }
      }
      send(404, { error: 'not found' })
    } catch (error) {
      send(500, { error: String(error) })
    }
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address()
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((r) => server.close(() => r())),
  }
}

/**
 * The same routes made with Clarion's Python SDK (test/harness/sdk_backend.py, Starlette): channel
 * auth and history tokens signed by the SDK's Authorizer. `feed.*` is allowed, `secret.*` refused.
 */
export async function startSdkBackend(clarionUrl) {
  const python = resolve(ROOT, '.venv/bin/python')
  const script = fileURLToPath(new URL('./sdk_backend.py', import.meta.url))
  const proc = spawn(python, [script, clarionUrl, APP.id, APP.key, APP.secret], {
    cwd: ROOT,
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const output = []
  const exited = new Promise((r) => proc.on('exit', r))
  const port = Number((await announced(proc, output, /listening on (\d+)/, 'the SDK backend'))[1])
  return {
    url: `http://127.0.0.1:${port}`,
    output,
    async close() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      await exited
    },
  }
}
