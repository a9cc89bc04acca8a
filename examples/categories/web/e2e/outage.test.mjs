// Connection failures and recovery: Clarion killed and restarted mid-session, and a device that
// goes offline and comes back. Changes made meanwhile show without a reload, through recovery:
// the events Clarion kept are replayed on resume, and where it lost them (a restarted memory
// server) the client is told and the app reloads its categories.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import {
  apiSession,
  eventually,
  freePort,
  launchBrowser,
  save,
  shot,
  signIn,
  startApp,
  startClarion,
  state,
  tree,
} from './harness.mjs'

let clarionPort
let clarion
let app
let browser

before(async () => {
  clarionPort = await freePort()
  clarion = await startClarion(clarionPort)
  app = await startApp(clarionPort)
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await app?.stop()
  await clarion?.stop()
})

const marked = (page) => page.evaluate(() => window.__sameDocument === true)

/** Keeps every toast the page shows (they go away after a few seconds). */
async function keepToasts(page) {
  await page.evaluate(() => {
    window.__toasts = []
    new MutationObserver(() => {
      for (const el of document.querySelectorAll('[data-testid=toast]')) {
        if (!window.__toasts.includes(el.textContent.trim())) window.__toasts.push(el.textContent.trim())
      }
    }).observe(document.body, { childList: true, subtree: true })
  })
}
const toasts = (page) => page.evaluate(() => window.__toasts)

/** Runs `check`; when it fails, shows the page's clarion-vue state (subscriptions, positions, telemetry). */
async function withClientState(page, check) {
  try {
    await check()
  } catch (error) {
    console.log('clarion-vue state:', JSON.stringify(await page.evaluate(() => window.Clarion.state)))
    throw error
  }
}

test('Clarion killed and restarted: the pages show reconnecting, then recover what changed meanwhile', async () => {
  const alice = await browser.newContext()
  const bob = await browser.newContext()
  const pages = [await signIn(alice, app, 'alice@acme.test'), await signIn(bob, app, 'bob@acme.test')]
  for (const page of pages) {
    await page.evaluate(() => (window.__sameDocument = true))
    await keepToasts(page)
  }
  const api = await apiSession(app, 'alice@acme.test')
  // A change before the crash: the pages know where the channel's history stands.
  assert.equal((await api.call('POST', '/api/categories', { name: 'Before the crash' })).status, 201)
  for (const page of pages) await eventually(async () => (await tree(page))['Before the crash'] === '', 'the change before')

  await clarion.kill()
  await eventually(async () => (await Promise.all(pages.map(state))).every((s) => s === 'reconnecting'), 'reconnecting')
  await shot(pages[1], 'bob-reconnecting')
  // Changes through the API while Clarion is down: the app's queue holds their broadcasts.
  const ids = await api.ids()
  assert.equal((await api.call('POST', '/api/categories', { name: 'Made in the outage' })).status, 201)
  assert.equal((await api.call('PATCH', `/api/categories/${ids.Garden}`, { name: 'Yard' })).status, 200)
  assert.equal((await api.call('DELETE', `/api/categories/${ids.Shoes}`)).status, 200)

  clarion = await startClarion(clarionPort)
  await eventually(async () => (await Promise.all(pages.map(state))).every((s) => s === 'connected'), 'connected again', 60_000)
  for (const page of pages) {
    await eventually(async () => {
      const t = await tree(page)
      return t['Made in the outage'] === '' && t.Yard === '' && t.Garden === undefined && t.Shoes === undefined
    }, 'the changes made during the outage')
    assert.ok(await marked(page), 'the page was not reloaded')
  }
  // The restarted server (memory) started a new history: the pages saw the new epoch, knew they
  // may have missed events, and reloaded the categories (onResync).
  await eventually(async () => (await toasts(pages[1])).some((t) => t.includes('Reloaded the categories')), 'the resync toast')
  await shot(pages[1], 'bob-recovered-after-restart')
  // And live again.
  await save(pages[0], 'After the restart')
  await eventually(async () => (await tree(pages[1]))['After the restart'] === '', 'a live change after the restart')
  await alice.close()
  await bob.close()
})

test('a device that goes offline and comes back gets what it missed, replayed', async () => {
  const alice = await browser.newContext()
  const bob = await browser.newContext()
  const admin = await signIn(alice, app, 'alice@acme.test')
  const member = await signIn(bob, app, 'bob@acme.test')
  await member.evaluate(() => (window.__sameDocument = true))
  await keepToasts(member)

  await bob.setOffline(true)
  await eventually(async () => (await state(member)) !== 'connected', 'bob notices he is offline')
  await shot(member, 'bob-offline')
  for (const name of ['Offline one', 'Offline two']) {
    await save(admin, name)
    await eventually(async () => (await tree(admin))[name] === '', `alice has ${name}`)
  }
  assert.equal((await tree(member))['Offline one'], undefined)

  await bob.setOffline(false)
  await eventually(async () => (await state(member)) === 'connected', 'bob is back', 60_000)
  await withClientState(member, () =>
    eventually(async () => {
      const t = await tree(member)
      return t['Offline one'] === '' && t['Offline two'] === ''
    }, 'what bob missed'),
  )
  const categories = await member.evaluate(() => window.Clarion.state.subscriptions[Object.keys(window.Clarion.state.subscriptions).find((c) => c.endsWith('.categories') && c.startsWith('private-'))])
  assert.equal(categories.wasRecovering, true, JSON.stringify(categories))
  assert.ok(await marked(member), 'the page was not reloaded')
  // Clarion kept the history: it was replayed, no reload of the categories was needed.
  assert.ok(!(await toasts(member)).some((t) => t.includes('Reloaded')), `${await toasts(member)}`)
  await alice.close()
  await bob.close()
})
