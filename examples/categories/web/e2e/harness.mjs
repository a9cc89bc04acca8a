// The reference app end to end: a real `clarion serve` and the real app (`python -m
// categories_app serve`, its SPA built in web/dist) from the repository's .venv, each on a free
// port with a fresh SQLite database, driven in Debian's Chromium through playwright-core.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { createServer as createHttpServer } from 'node:http'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const HERE = dirname(fileURLToPath(import.meta.url))
export const APP_DIR = resolve(HERE, '../..')
export const ROOT = resolve(APP_DIR, '../..')
const PYTHON = resolve(ROOT, '.venv/bin/python')
export const SHOTS = resolve(HERE, '../test-results/screenshots')
export const PASSWORD = 'demo-password'
const CLARION_APP = { id: '77', key: 'e2e-key', secret: 'e2e-secret' }

export async function freePort() {
  const server = createServer()
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok))
  const { port } = server.address()
  await new Promise((ok) => server.close(ok))
  return port
}

/** Waits for `check()` (sync or async) to be truthy; fails with `what` after `timeout` ms. */
export async function eventually(check, what, timeout = 30_000) {
  const deadline = Date.now() + timeout
  let last
  for (;;) {
    try {
      if (await check()) return
    } catch (error) {
      last = error
    }
    if (Date.now() > deadline) throw new Error(`not within ${timeout} ms: ${what}${last ? ` (${last})` : ''}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

function run(name, args, { cwd, env, ready }) {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: run scripts/setup.sh first`)
  const proc = spawn(PYTHON, args, { cwd, env: { ...process.env, PYTHONUNBUFFERED: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const output = []
  const exited = new Promise((ok) => proc.on('exit', ok))
  const started = new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${name} did not start:\n${output.join('')}`)), 60_000)
    const onData = (chunk) => {
      output.push(chunk.toString())
      if (ready !== undefined && ready.test(output.join(''))) {
        clearTimeout(timer)
        ok()
      }
    }
    proc.stdout.on('data', onData)
    proc.stderr.on('data', onData)
    proc.on('exit', (code) => {
      clearTimeout(timer)
      fail(new Error(`${name} exited with ${code}:\n${output.join('')}`))
    })
    if (ready === undefined) ok()
  })
  return { proc, output, exited, started }
}

/** `clarion serve` on a fixed port (a restart comes back where the browsers look for it). */
export async function startClarion(port) {
  const env = {
    CLARION_HOST: '127.0.0.1',
    CLARION_PORT: String(port),
    CLARION_APP_ID: CLARION_APP.id,
    CLARION_APP_KEY: CLARION_APP.key,
    CLARION_APP_SECRET: CLARION_APP.secret,
  }
  const child = run('clarion serve', ['-m', 'clarion', 'serve'], { cwd: ROOT, env, ready: /listening on http/ })
  await child.started
  return {
    port,
    output: child.output,
    /** SIGKILL: Clarion vanishes as in a crash. */
    async kill() {
      if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL')
      await child.exited
    },
    async stop() {
      if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGTERM')
      await child.exited
    },
  }
}

/**
 * The app, on a fresh SQLite database seeded with the demo data. `wsPort`: where the browsers
 * open their WebSocket (a proxy in front of Clarion), when not Clarion's own port.
 */
export async function startApp(clarionPort, { wsPort } = {}) {
  const data = await mkdtemp(join(tmpdir(), 'categories-e2e-'))
  const port = await freePort()
  const env = {
    PYTHONPATH: APP_DIR,
    CATEGORIES_DATABASE_URL: `sqlite:///${join(data, 'app.db')}`,
    CATEGORIES_MEDIA_DIR: join(data, 'media'),
    CLARION_BROADCAST_DRIVER: `pusher://${CLARION_APP.key}:${CLARION_APP.secret}@127.0.0.1:${clarionPort}/${CLARION_APP.id}`,
    ...(wsPort ? { CATEGORIES_WS_PORT: String(wsPort) } : {}),
  }
  const child = run('the app', ['-m', 'categories_app', 'serve', '--port', String(port)], { cwd: APP_DIR, env })
  const url = `http://127.0.0.1:${port}`
  await eventually(async () => (await fetch(`${url}/health`)).ok, 'the app answers', 60_000)
  return {
    url,
    output: child.output,
    async stop() {
      if (child.proc.exitCode === null) child.proc.kill('SIGTERM')
      await child.exited
      await rm(data, { recursive: true, force: true })
    },
  }
}

/**
 * A proxy in front of Clarion's WebSocket that can refuse upgrades (403), as a proxy that
 * blocks WebSockets does, and let them through again.
 */
export async function startUpgradeProxy(targetPort) {
  let blocked = false
  const sockets = new Set()
  const server = createHttpServer((request, response) => {
    response.writeHead(404).end()
  })
  server.on('upgrade', (request, socket, head) => {
    if (blocked) {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
      return
    }
    const upstream = connect(targetPort, '127.0.0.1', () => {
      const lines = [`${request.method} ${request.url} HTTP/1.1`]
      for (let i = 0; i < request.rawHeaders.length; i += 2) lines.push(`${request.rawHeaders[i]}: ${request.rawHeaders[i + 1]}`)
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`)
      if (head.length) upstream.write(head)
      socket.pipe(upstream).pipe(socket)
    })
    sockets.add(socket)
    sockets.add(upstream)
    const done = () => {
      socket.destroy()
      upstream.destroy()
      sockets.delete(socket)
      sockets.delete(upstream)
    }
    socket.on('error', done).on('close', done)
    upstream.on('error', done).on('close', done)
  })
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok))
  return {
    port: server.address().port,
    /** Refuse new upgrades and cut the WebSockets open through the proxy. */
    block() {
      blocked = true
      for (const socket of sockets) socket.destroy()
    },
    allow() {
      blocked = false
    },
    async close() {
      for (const socket of sockets) socket.destroy()
      await new Promise((ok) => server.close(ok))
    },
  }
}

export async function launchBrowser() {
  await mkdir(SHOTS, { recursive: true })
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  })
}

/** Opens the app in `context` and signs in; resolves once the page is connected. */
export async function signIn(context, app, email) {
  const page = await context.newPage()
  page.on('pageerror', (error) => console.error(`page error (${email}):`, error))
  await page.goto(app.url)
  await page.getByTestId('login-email').fill(email)
  await page.getByTestId('login-password').fill(PASSWORD)
  await page.getByTestId('login-submit').click()
  await subscribed(page, email)
  return page
}

/** Connected, and every channel the page joined is subscribed. */
async function subscribed(page, what) {
  await eventually(
    () =>
      page.evaluate(() => {
        const state = window.Clarion?.state
        const subs = Object.values(state?.subscriptions ?? {})
        return state?.status === 'connected' && subs.length >= 4 && subs.every((s) => s.status === 'subscribed')
      }),
    `${what}: connected and subscribed`,
  )
}

/** A second tab of an already signed-in context. */
export async function openTab(context, app) {
  const page = await context.newPage()
  await page.goto(app.url)
  await subscribed(page, 'the second tab')
  return page
}

export async function state(page) {
  return (await page.getByTestId('connection-state').textContent({ timeout: 1000 }))?.trim()
}

/** The category names the page shows, with their parent ids: {name: parentId|''}. */
export async function tree(page) {
  return page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll('[data-testid=category-item]')].map((el) => [el.textContent.trim(), el.dataset.parent]),
    ),
  )
}

export async function parentOptions(page) {
  return (await page.getByTestId('category-parent-select').locator('option').allTextContents()).map((t) => t.trim())
}

/** Fills the editor and saves: a new category, or the one being edited. */
export async function save(page, name, parentName) {
  await page.getByTestId('category-name-input').fill(name)
  if (parentName !== undefined) {
    const option = parentName === null ? '(top level)' : parentName
    const value = await page
      .getByTestId('category-parent-select')
      .locator('option')
      .evaluateAll((options, wanted) => options.find((o) => o.textContent.trim() === wanted)?.value, option)
    if (value === undefined) throw new Error(`no parent option ${option}`)
    await page.getByTestId('category-parent-select').selectOption(value)
  }
  await page.getByTestId('category-save').click()
}

export async function edit(page, name) {
  await page.locator(`li:has(> [data-testid=category-item]:text-is("${name}")) [data-testid=category-edit]`).click()
}

/** The API as a script uses it: sign in, then JSON calls with the CSRF header. */
export async function apiSession(app, email) {
  const login = await fetch(`${app.url}/api/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email, password: PASSWORD }),
  })
  if (!login.ok) throw new Error(`sign-in failed: ${login.status}`)
  const cookies = login.headers.getSetCookie().map((c) => c.split(';')[0])
  const csrf = (await login.json()).csrf_token
  const call = async (method, path, body) => {
    const answer = await fetch(`${app.url}${path}`, {
      method,
      headers: { Cookie: cookies.join('; '), 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await answer.text()
    return { status: answer.status, body: text ? JSON.parse(text) : null }
  }
  return { call, ids: async () => Object.fromEntries((await call('GET', '/api/categories')).body.categories.map((c) => [c.name, c.id])) }
}

export async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true })
}
