// Two users of one tenant on two "devices" (browser contexts), one with a second tab: every
// change made in one shows in the others without a reload, the parent dropdown follows, the
// other tenant sees nothing (and its crafted subscription from the console is refused), and an
// invalid category is refused with a clear message while the others receive nothing.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import {
  edit,
  eventually,
  freePort,
  launchBrowser,
  openTab,
  parentOptions,
  save,
  shot,
  signIn,
  startApp,
  startClarion,
  tree,
} from './harness.mjs'

let clarion
let app
let browser

before(async () => {
  clarion = await startClarion(await freePort())
  app = await startApp(clarion.port)
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await app?.stop()
  await clarion?.stop()
})

/** Records every category event the page's own Echo receives, for "nothing arrived" checks. */
async function recordEvents(page, tenantId) {
  await page.evaluate((channel) => {
    window.__seen = []
    const ch = window.Echo.private(channel)
    for (const name of ['category.created', 'category.updated', 'category.deleted']) {
      ch.listen(`.${name}`, (data) => window.__seen.push({ name, data }))
    }
  }, `tenant.${tenantId}.categories`)
}

const seen = (page) => page.evaluate(() => window.__seen)

test('a change on one device shows on the other device and in a second tab, without a reload', async () => {
  const alice = await browser.newContext()
  const bob = await browser.newContext()
  const first = await signIn(alice, app, 'alice@acme.test')
  const second = await openTab(alice, app)
  const member = await signIn(bob, app, 'bob@acme.test')
  const others = [second, member]
  for (const page of [first, ...others]) await page.evaluate(() => (window.__loaded = performance.timeOrigin))
  const origins = await Promise.all(others.map((p) => p.evaluate(() => window.__loaded)))
  await shot(first, 'alice-categories')
  await shot(member, 'bob-member-view')

  const delays = []
  const change = async (what, act, check) => {
    // A background tab's clicks wait on throttled animation frames: act in the front tab.
    await first.bringToFront()
    const started = Date.now()
    await act()
    await eventually(async () => (await Promise.all(others.map(check))).every(Boolean), what, 15_000)
    delays.push(`${what}: ${Date.now() - started} ms`) // measured, not asserted: speed is for benchmarks
  }

  await change('created', () => save(first, 'Hats', 'Apparel'), async (p) => (await tree(p)).Hats !== undefined)
  const apparel = await first.getByTestId('category-item').filter({ hasText: /^Apparel$/ }).getAttribute('data-id')
  assert.equal((await tree(member)).Hats, apparel)
  await eventually(async () => (await parentOptions(second)).includes('Hats'), 'the dropdown offers Hats')

  await edit(first, 'Hats')
  await change('renamed', () => save(first, 'Caps'), async (p) => {
    const t = await tree(p)
    return t.Caps !== undefined && t.Hats === undefined
  })
  await eventually(async () => (await parentOptions(second)).includes('Caps') && !(await parentOptions(second)).includes('Hats'), 'the dropdown follows the rename')

  const garden = await first.getByTestId('category-item').filter({ hasText: /^Garden$/ }).getAttribute('data-id')
  await edit(first, 'Caps')
  await change('moved', () => save(first, 'Caps', 'Garden'), async (p) => (await tree(p)).Caps === garden)
  await shot(member, 'bob-after-move')

  first.once('dialog', (dialog) => dialog.accept())
  await change(
    'deleted',
    () => first.locator('li:has(> [data-testid=category-item]:text-is("Caps")) [data-testid=category-delete]').click(),
    async (p) => (await tree(p)).Caps === undefined,
  )
  await eventually(async () => !(await parentOptions(second)).includes('Caps'), 'the dropdown drops Caps')
  // Nothing was reloaded: the pages are the ones first loaded.
  assert.deepEqual(await Promise.all(others.map((p) => p.evaluate(() => window.__loaded))), origins)
  console.log(`delays until every other page showed the change: ${delays.join(', ')}`)
  await alice.close()
  await bob.close()
})

test('a move is a toast for the other users of the tenant, and presence shows who is here', async () => {
  const alice = await browser.newContext()
  const bob = await browser.newContext()
  const admin = await signIn(alice, app, 'alice@acme.test')
  const member = await signIn(bob, app, 'bob@acme.test')
  await eventually(async () => (await admin.getByTestId('presence-member').allTextContents()).length === 2, 'both are here')
  assert.deepEqual((await admin.getByTestId('presence-member').allTextContents()).map((t) => t.trim()).sort(), ['Alice admin', 'Bob member'])
  await edit(admin, 'Shoes')
  await save(admin, 'Shoes', 'Apparel')
  await eventually(async () => (await member.getByTestId('toast').allTextContents()).some((t) => t.includes('Alice moved Shoes under Apparel')), 'the toast')
  await shot(member, 'bob-toast')
  await bob.close()
  await eventually(async () => (await admin.getByTestId('presence-member').allTextContents()).length === 1, 'Bob left')
  await alice.close()
})

test('the other tenant sees none of it, and a subscription crafted in its console is refused', async () => {
  const alice = await browser.newContext()
  const carol = await browser.newContext()
  const admin = await signIn(alice, app, 'alice@acme.test')
  const other = await signIn(carol, app, 'carol@globex.test')
  const acme = await admin.evaluate(() => fetch('/api/me').then((r) => r.json()).then((me) => me.tenant_id))
  const globexBefore = await tree(other)
  const crafted = await other.evaluate(
    (channel) =>
      new Promise((resolveOutcome) => {
        window.__stolen = []
        const ch = window.Echo.private(channel)
        ch.listen('.category.created', (data) => window.__stolen.push(data))
        ch.error((error) => resolveOutcome({ refused: true, type: error?.type, reason: String(error?.error) }))
        ch.subscribed(() => resolveOutcome({ refused: false }))
      }),
    `tenant.${acme}.categories`,
  )
  assert.deepEqual(crafted, {
    refused: true,
    type: 'AuthError',
    reason: "/broadcasting/auth answered 403: the channel's guard refused this user",
  })
  await save(admin, 'Secret plans')
  await eventually(async () => (await tree(admin))['Secret plans'] !== undefined, 'Alice has it')
  await new Promise((r) => setTimeout(r, 1000))
  assert.deepEqual(await tree(other), globexBefore)
  assert.deepEqual(await other.evaluate(() => window.__stolen), [])
  await shot(other, 'carol-other-tenant')
  await alice.close()
  await carol.close()
})

test('an invalid category is refused with a clear message, and the other device receives nothing', async () => {
  const alice = await browser.newContext()
  const bob = await browser.newContext()
  const admin = await signIn(alice, app, 'alice@acme.test')
  const member = await signIn(bob, app, 'bob@acme.test')
  const acme = await member.evaluate(() => fetch('/api/me').then((r) => r.json()).then((me) => me.tenant_id))
  await recordEvents(member, acme)
  const before = await tree(member)

  await save(admin, 'Apparel') // a sibling of that name exists at the top level
  await eventually(async () => (await admin.getByTestId('category-error').allTextContents()).length > 0, 'the error shows')
  assert.deepEqual(await admin.getByTestId('category-error').allTextContents(), ['A category named Apparel already exists at the top level.'])
  await shot(admin, 'alice-invalid-category')
  await save(admin, 'x'.repeat(81))
  await eventually(
    async () => (await admin.getByTestId('category-error').allTextContents()).includes('The name may have at most 80 characters.'),
    'the length error shows',
  )
  await edit(admin, 'Phones')
  await save(admin, '   ')
  await eventually(
    async () => (await admin.getByTestId('category-error').allTextContents()).includes('The name is required.'),
    'the empty-name error shows',
  )
  // The dropdown never offers a category's own descendants as its parent: no cycle to pick.
  await admin.getByTestId('category-cancel').click()
  await edit(admin, 'Electronics')
  assert.ok(!(await parentOptions(admin)).includes('Phones') && !(await parentOptions(admin)).includes('Electronics'))
  await admin.getByTestId('category-cancel').click()

  // A valid change after them: it arrives, and it is the only thing that did.
  await save(admin, 'Umbrellas')
  await eventually(async () => (await seen(member)).length === 1, 'the valid change arrives')
  assert.deepEqual((await seen(member)).map((e) => [e.name, e.data.name]), [['category.created', 'Umbrellas']])
  assert.deepEqual(await tree(member), { ...before, Umbrellas: '' })
  await alice.close()
  await bob.close()
})
