// A real `clarion serve` for the tests: started from the repository's .venv on a free port, with
// the test app's credentials; stopped (or killed, to simulate a crash) by the test.
import { spawn } from 'node:child_process'
import { createHash, createHmac, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..')
const CLARION = resolve(ROOT, '.venv/bin/clarion')
export const APP = { id: '1234', key: 'test-key', secret: 'test-secret' }

/** A unique Redis key prefix for one test run, so runs sharing the Redis never meet. */
export function uniquePrefix() {
  return `test-vue-${randomBytes(6).toString('hex')}`
}

/**
 * Starts `clarion serve`; resolves once it prints its "listening on" line.
 * `port` 0 takes a free one; a fixed one lets a restarted node come back where clients look for it.
 */
export async function startClarion({ port = 0, env = {} } = {}) {
  if (!existsSync(CLARION)) throw new Error(`${CLARION} is missing: run scripts/setup.sh first`)
  const proc = spawn(CLARION, ['serve'], {
    cwd: ROOT,
    env: {
      ...process.env,
      CLARION_HOST: '127.0.0.1',
      CLARION_PORT: String(port),
      CLARION_APP_ID: APP.id,
      CLARION_APP_KEY: APP.key,
      CLARION_APP_SECRET: APP.secret,
      PYTHONUNBUFFERED: '1',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const output = []
  const actualPort = Number((await announced(proc, output, /listening on https?:\/\/([^:\s]+):(\d+)/, 'clarion serve'))[2])
  const exited = new Promise((resolveExit) => proc.on('exit', resolveExit))
  return {
    host: '127.0.0.1',
    port: actualPort,
    env,
    url: `http://127.0.0.1:${actualPort}`,
    proc,
    output,
    /** SIGKILL: the node vanishes as in a crash; no goodbye to its clients. */
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
      await exited
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    },
  }
}

/**
 * Collects `proc`'s output into `output` and resolves with the match once `pattern` appears in it;
 * rejects if the process exits first or nothing matches within 30 s.
 */
export function announced(proc, output, pattern, what) {
  return new Promise((resolveMatch, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start:\n${output.join('')}`)), 30_000)
    const onData = (chunk) => {
      output.push(chunk.toString())
      const match = pattern.exec(output.join(''))
      if (match) {
        clearTimeout(timer)
        resolveMatch(match)
      }
    }
    proc.stdout.on('data', onData)
    proc.stderr.on('data', onData)
    proc.on('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`${what} exited with ${code}:\n${output.join('')}`))
    })
  })
}

function sign(method, path, query, secret) {
  const sorted = Object.keys(query)
    .sort()
    .map((k) => `${k}=${query[k]}`)
    .join('&')
  return createHmac('sha256', secret).update(`${method}\n${path}\n${sorted}`).digest('hex')
}

/** A signed HTTP API call, as a backend SDK makes it. */
export async function apiCall(baseUrl, method, path, body, extraQuery = {}) {
  const text = body === undefined ? '' : JSON.stringify(body)
  const query = {
    auth_key: APP.key,
    auth_timestamp: String(Math.floor(Date.now() / 1000)),
    auth_version: '1.0',
    ...extraQuery,
  }
  if (body !== undefined) query.body_md5 = createHash('md5').update(text).digest('hex')
  query.auth_signature = sign(method, path, query, APP.secret)
  const url = `${baseUrl}${path}?${new URLSearchParams(query)}`
  const response = await fetch(url, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : text,
  })
  const answer = await response.text()
  return { status: response.status, body: answer ? JSON.parse(answer) : null }
}

/** Publishes one event through the HTTP API; throws unless the server took it. */
export async function publish(baseUrl, channel, event, data) {
  const { status, body } = await apiCall(baseUrl, 'POST', `/apps/${APP.id}/events`, {
    name: event,
    channels: [channel],
    data: JSON.stringify(data),
  })
  if (status !== 200) throw new Error(`publishing to ${channel} answered ${status}: ${JSON.stringify(body)}`)
}

/** Waits until `check()` is truthy, polling; fails after `timeout` ms with `what` and, when given,
 * what `report()` says about the state it was in. */
export async function eventually(check, what, timeout = 20_000, report = () => '') {
  const deadline = Date.now() + timeout
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${report()}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}
