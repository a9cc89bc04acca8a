// Reading history over HTTP for the polling fallback: Clarion's endpoint with a history token from
// the app's auth endpoint (interface 2 and 3), or the app backend's route.
import { describe, expect, it } from 'vitest'
import { backendHistory, directHistory, HistoryError } from '../../src/history'

type Call = { url: string; init: RequestInit | undefined }

function fakeFetch(answer: (url: URL, init: RequestInit | undefined) => Response) {
  const calls: Call[] = []
  const fetchFn = (async (input: RequestInfo | URL, init?: RequestInit) => {
    calls.push({ url: String(input), init })
    return answer(new URL(String(input)), init)
  }) as typeof fetch
  return { calls, fetchFn }
}

const json = (body: unknown, status = 200): Response =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } })

const ANSWER = { channel: 'private-a', epoch: 'E', serial: 3, recovered: true, events: [{ event: 'e', channel: 'private-a', data: '{}', epoch: 'E', serial: 3 }] }

describe('Clarion’s history endpoint from a browser', () => {
  it('asks the auth endpoint for a token (history=1, no socket id) and sends it as X-Clarion-History-Token', async () => {
    const now = Math.floor(Date.now() / 1000)
    const { calls, fetchFn } = fakeFetch((url) =>
      url.pathname === '/broadcasting/auth' ? json({ history_token: `${now + 300}:abc`, expires: now + 300 }) : json(ANSWER),
    )
    const source = directHistory(
      { baseUrl: 'http://ws.example:6001', appId: '1234', key: 'k', authEndpoint: 'http://app.example/broadcasting/auth' },
      { fetch: fetchFn, headers: async () => ({ 'X-CSRF-TOKEN': 'csrf' }) },
    )
    const answer = await source({ channel: 'private-a', epoch: 'E', since: 2, limit: 50 })
    expect(answer.events).toHaveLength(1)
    const [tokenCall, historyCall] = calls
    expect(tokenCall!.url).toBe('http://app.example/broadcasting/auth')
    expect(tokenCall!.init?.method).toBe('POST')
    expect(new URLSearchParams(String(tokenCall!.init?.body)).toString()).toBe('channel_name=private-a&history=1')
    expect((tokenCall!.init?.headers as Record<string, string>)['X-CSRF-TOKEN']).toBe('csrf')
    const url = new URL(historyCall!.url)
    expect(url.pathname).toBe('/apps/1234/channels/private-a/history')
    expect(Object.fromEntries(url.searchParams)).toEqual({ auth_key: 'k', epoch: 'E', since: '2', limit: '50' })
    expect((historyCall!.init?.headers as Record<string, string>)['X-Clarion-History-Token']).toBe(`${now + 300}:abc`)

    // The token is reused while it is valid.
    await source({ channel: 'private-a', epoch: 'E', since: 3 })
    expect(calls.filter((c) => c.url.endsWith('/broadcasting/auth'))).toHaveLength(1)
  })

  it('asks again once the token is near its expiry', async () => {
    const now = Math.floor(Date.now() / 1000)
    const { calls, fetchFn } = fakeFetch((url) =>
      url.pathname === '/broadcasting/auth' ? json({ history_token: `${now + 10}:x`, expires: now + 10 }) : json(ANSWER),
    )
    const source = directHistory({ baseUrl: 'http://ws', appId: '1', key: 'k', authEndpoint: 'http://app/broadcasting/auth' }, { fetch: fetchFn, headers: async () => ({}) })
    await source({ channel: 'presence-room' })
    await source({ channel: 'presence-room' })
    expect(calls.filter((c) => c.url.endsWith('/broadcasting/auth'))).toHaveLength(2)
  })

  it('public channels need no token', async () => {
    const { calls, fetchFn } = fakeFetch(() => json({ ...ANSWER, channel: 'news' }))
    const source = directHistory({ baseUrl: 'http://ws', appId: '1', key: 'k', authEndpoint: 'http://app/auth' }, { fetch: fetchFn, headers: async () => ({}) })
    await source({ channel: 'news' })
    expect(calls).toHaveLength(1)
    expect((calls[0]!.init?.headers as Record<string, string>)['X-Clarion-History-Token']).toBeUndefined()
  })

  it('a refusal is a HistoryError with the status and the server’s reason', async () => {
    const { fetchFn } = fakeFetch((url) => (url.pathname.endsWith('/auth') ? json({ error: 'not yours' }, 403) : json(ANSWER)))
    const source = directHistory({ baseUrl: 'http://ws', appId: '1', key: 'k', authEndpoint: 'http://app/auth' }, { fetch: fetchFn, headers: async () => ({}) })
    const error = await source({ channel: 'private-a' }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(HistoryError)
    expect((error as HistoryError).status).toBe(403)
    expect((error as HistoryError).message).toMatch(/not yours/)
  })

  it('an answer of the wrong shape is refused, not half used', async () => {
    const { fetchFn } = fakeFetch(() => json({ events: 'nope' }))
    const source = directHistory({ baseUrl: 'http://ws', appId: '1', key: 'k', authEndpoint: 'http://app/auth' }, { fetch: fetchFn, headers: async () => ({}) })
    await expect(source({ channel: 'news' })).rejects.toThrow(/unexpected shape/)
  })
})

describe('the app backend’s history route', () => {
  it('sends channel_name, epoch, since and limit with the app’s headers', async () => {
    const { calls, fetchFn } = fakeFetch(() => json(ANSWER))
    const source = backendHistory('http://app.example/broadcasting/history', { fetch: fetchFn, headers: async () => ({ Authorization: 'Bearer t' }) })
    await source({ channel: 'private-a', epoch: 'E', since: 7, limit: 20 })
    const url = new URL(calls[0]!.url)
    expect(url.pathname).toBe('/broadcasting/history')
    expect(Object.fromEntries(url.searchParams)).toEqual({ channel_name: 'private-a', epoch: 'E', since: '7', limit: '20' })
    expect((calls[0]!.init?.headers as Record<string, string>).Authorization).toBe('Bearer t')
  })
})
