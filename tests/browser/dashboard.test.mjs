// The dashboard in Debian's Chromium (playwright-core): sign in with the admin token, see the
// charts follow real traffic and the debug console show a published event, and keep a screenshot
// in tests/browser/artifacts/ (not committed).
import { spawn } from 'node:child_process'
import { createHash, createHmac } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = resolve(HERE, '../..')
const PYTHON = resolve(ROOT, '.venv/bin/python')
const ARTIFACTS = resolve(HERE, 'artifacts')
const TOKEN = 'browser-test-admin-token-0123456789'
const APP = { id: '601', key: 'browser-key', secret: 'browser-secret' }

/** `clarion serve` on a free port (it prints which), with the dashboard on. */
async function startClarion() {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: run scripts/setup.sh first`)
  const env = {
    ...process.env,
    PYTHONUNBUFFERED: '1',
    CLARION_HOST: '127.0.0.1',
    CLARION_PORT: '0',
    CLARION_APP_ID: APP.id,
    CLARION_APP_KEY: APP.key,
    CLARION_APP_SECRET: APP.secret,
    CLARION_ADMIN_TOKEN: TOKEN,
    CLARION_DASHBOARD_INTERVAL: '0.25',
    CLARION_DEBUG_PAYLOADS: 'true',
  }
  const proc = spawn(PYTHON, ['-m', 'clarion', 'serve'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  const output = []
  const exited = new Promise((ok) => proc.on('exit', ok))
  const port = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`clarion did not start:\n${output.join('')}`)), 30_000)
    const onData = (chunk) => {
      output.push(chunk.toString())
      const match = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output.join(''))
      if (match) {
        clearTimeout(timer)
        ok(Number(match[1]))
      }
    }
    proc.stdout.on('data', onData)
    proc.stderr.on('data', onData)
    proc.on('exit', (code) => fail(new Error(`clarion exited with ${code}:\n${output.join('')}`)))
  })
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    output,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      await exited
    },
  }
}

/** One event through the signed HTTP API, as the SDKs sign it. */
async function trigger(base, channel, name, data) {
  const path = `/apps/${APP.id}/events`
  const body = JSON.stringify({ name, channel, data })
  const params = {
    auth_key: APP.key,
    auth_timestamp: String(Math.floor(Date.now() / 1000)),
    auth_version: '1.0',
    body_md5: createHash('md5').update(body).digest('hex'),
  }
  const query = Object.keys(params)
    .sort()
    .map((key) => `${key}=${params[key]}`)
    .join('&')
  const signature = createHmac('sha256', APP.secret).update(`POST\n${path}\n${query}`).digest('hex')
  const response = await fetch(`${base}${path}?${query}&auth_signature=${signature}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body,
  })
  assert.equal(response.status, 200, await response.text())
}

async function eventually(check, what, timeout = 20_000) {
  const deadline = Date.now() + timeout
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`not within ${timeout} ms: ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

test('the dashboard charts live traffic and its console shows a published event', async () => {
  const clarion = await startClarion()
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  })
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    const page = await context.newPage()
    const errors = []
    page.on('pageerror', (error) => errors.push(String(error)))
    let signedIn = false
    page.on('response', (response) => {
      const failed = response.status() >= 400 && new URL(response.url()).pathname.startsWith('/dashboard')
      if (signedIn && failed) errors.push(`${response.status()} ${response.url()}`)
    })

    // Without a session: the sign-in form (401), then the token once.
    const first = await page.goto(`${clarion.url}/dashboard`)
    assert.equal(first.status(), 401)
    await page.fill('#token', TOKEN)
    await Promise.all([page.waitForURL(`${clarion.url}/dashboard`), page.click('button[type=submit]')])
    await page.waitForSelector('#value-connections')
    signedIn = true
    const cookies = await context.cookies()
    const session = cookies.find((cookie) => cookie.name === 'clarion_dashboard')
    assert.ok(session && session.httpOnly && session.sameSite === 'Strict')
    assert.ok(!session.value.includes(TOKEN))

    // The debug console on the app, then traffic: five sockets subscribed, events published.
    await page.selectOption('#app', APP.id)
    await page.click('#toggle')
    await page.waitForFunction(() => document.getElementById('console-state').textContent.startsWith('streaming'))
    const clients = await context.newPage()
    await clients.evaluate(
      async ({ url, key }) => {
        window.sockets = []
        for (let i = 0; i < 5; i++) {
          const socket = new WebSocket(`${url}/app/${key}?protocol=7&client=js&version=8.0.0`)
          await new Promise((ok) => socket.addEventListener('message', ok, { once: true }))
          socket.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: `room-${i % 2}` } }))
          window.sockets.push(socket)
        }
      },
      { url: clarion.url.replace('http', 'ws'), key: APP.key },
    )
    let sent = 0
    await eventually(async () => {
      await trigger(clarion.url, 'room-0', 'dash-browser-event', JSON.stringify({ n: sent++ }))
      const connections = Number(await page.textContent('#value-connections'))
      const channels = await page.getAttribute('#chart-load polyline[data-series=connections]', 'data-points')
      const published = Number(await page.textContent('#value-published_per_s'))
      return connections === 5 && Number(channels) > 1 && published > 0
    }, 'the charts show five connections and a publish rate')
    assert.ok(Number(await page.getAttribute('#chart-rate polyline[data-series=delivered_per_s]', 'data-points')) > 1)
    assert.notEqual(await page.textContent('#value-api_p99_ms'), '–')

    // The console shows the subscriptions and the API messages, with their data (debug_payloads).
    const row = page.locator('#events tbody tr[data-type=api_message]').first()
    await row.waitFor()
    assert.match(await row.textContent(), /room-0dash-browser-event\{"data":"\{\\"n\\":\d+\}"\}/)
    assert.ok((await page.locator('#events tbody tr[data-type=subscribed]').count()) >= 5)
    assert.ok((await page.locator('#events tbody tr[data-type=occupied]').count()) >= 2)

    await mkdir(ARTIFACTS, { recursive: true })
    await page.screenshot({ path: resolve(ARTIFACTS, 'dashboard.png'), fullPage: true })
    assert.deepEqual(errors, [])
  } finally {
    await browser.close()
    await clarion.stop()
  }
})
