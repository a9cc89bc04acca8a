// Reading a channel's history over HTTP, for the polling fallback: straight from Clarion's history
// endpoint (with a history token from the app's auth endpoint for channels that need auth), or
// through a route of the app's backend where the browser cannot reach Clarion over plain HTTP.

import { isRecord } from './frames'

export interface HistoryAnswer {
  channel: string
  epoch: string | null
  serial: number
  recovered: boolean
  reason?: string
  /** The frames as the socket would have carried them. */
  events: Array<Record<string, unknown>>
}

export interface HistoryQuery {
  channel: string
  epoch?: string | undefined
  since?: number | undefined
  limit?: number | undefined
}

export type HistorySource = (query: HistoryQuery, signal?: AbortSignal) => Promise<HistoryAnswer>

/** A refused or failed history read; ``status`` is the HTTP status (0 when no answer came). */
export class HistoryError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
    this.name = 'HistoryError'
  }
}

export type HeadersInput = Record<string, string>

export interface HistoryAccess {
  fetch: typeof fetch
  /** Headers for the app's own routes (auth endpoint, history route): CSRF, bearer, the provider's. */
  headers: () => Promise<HeadersInput>
}

export interface DirectHistoryOptions {
  /** Clarion's HTTP base, e.g. ``https://ws.example.com``. */
  baseUrl: string
  appId: string
  key: string
  /** The app's channel-auth endpoint, asked with ``history=1`` for a token. */
  authEndpoint: string
}

const TOKEN_MARGIN_S = 30

function needsToken(channel: string): boolean {
  return channel.startsWith('private-') || channel.startsWith('presence-')
}

function appendQuery(url: URL, query: HistoryQuery): void {
  if (query.epoch !== undefined) url.searchParams.set('epoch', query.epoch)
  if (query.since !== undefined) url.searchParams.set('since', String(query.since))
  if (query.limit !== undefined) url.searchParams.set('limit', String(query.limit))
}

async function readAnswer(response: Response, what: string): Promise<unknown> {
  let body: unknown
  try {
    body = await response.json()
  } catch {
    body = undefined
  }
  if (!response.ok) {
    const reason = isRecord(body) && typeof body.error === 'string' ? body.error : response.statusText
    throw new HistoryError(response.status, `${what} answered ${response.status}: ${reason}`)
  }
  return body
}

function asAnswer(body: unknown, channel: string): HistoryAnswer {
  if (
    !isRecord(body) ||
    typeof body.serial !== 'number' ||
    typeof body.recovered !== 'boolean' ||
    !Array.isArray(body.events) ||
    !(typeof body.epoch === 'string' || body.epoch === null)
  ) {
    throw new HistoryError(200, `the history of ${channel} came back in an unexpected shape`)
  }
  const answer: HistoryAnswer = {
    channel,
    epoch: body.epoch,
    serial: body.serial,
    recovered: body.recovered,
    events: body.events.filter(isRecord),
  }
  if (typeof body.reason === 'string') answer.reason = body.reason
  return answer
}

/** Clarion's history endpoint, with ``X-Clarion-History-Token`` for private and presence channels. */
export function directHistory(options: DirectHistoryOptions, access: HistoryAccess): HistorySource {
  const tokens = new Map<string, { token: string; expires: number }>()

  async function token(channel: string, signal?: AbortSignal): Promise<string> {
    const cached = tokens.get(channel)
    if (cached !== undefined && cached.expires - TOKEN_MARGIN_S > Date.now() / 1000) return cached.token
    const body = new URLSearchParams({ channel_name: channel, history: '1' })
    const init: RequestInit = {
      method: 'POST',
      headers: { ...(await access.headers()), 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
      body: body.toString(),
    }
    if (signal !== undefined) init.signal = signal
    const answer = await readAnswer(await access.fetch(options.authEndpoint, init), 'the auth endpoint (history=1)')
    if (!isRecord(answer) || typeof answer.history_token !== 'string' || typeof answer.expires !== 'number') {
      throw new HistoryError(200, 'the auth endpoint gave no history_token')
    }
    tokens.set(channel, { token: answer.history_token, expires: answer.expires })
    return answer.history_token
  }

  return async (query, signal) => {
    const url = new URL(
      `/apps/${encodeURIComponent(options.appId)}/channels/${encodeURIComponent(query.channel)}/history`,
      options.baseUrl,
    )
    url.searchParams.set('auth_key', options.key)
    appendQuery(url, query)
    const headers: HeadersInput = { Accept: 'application/json' }
    if (needsToken(query.channel)) headers['X-Clarion-History-Token'] = await token(query.channel, signal)
    const init: RequestInit = { headers }
    if (signal !== undefined) init.signal = signal
    const response = await access.fetch(url.toString(), init)
    if (response.status === 401 || response.status === 403) tokens.delete(query.channel)
    return asAnswer(await readAnswer(response, 'the history endpoint'), query.channel)
  }
}

/** The app backend's ``GET /broadcasting/history`` route, which authorizes and signs the call to Clarion. */
export function backendHistory(endpoint: string, access: HistoryAccess): HistorySource {
  return async (query, signal) => {
    const base = typeof location !== 'undefined' ? location.href : undefined
    const url = new URL(endpoint, base)
    url.searchParams.set('channel_name', query.channel)
    appendQuery(url, query)
    const init: RequestInit = { headers: { ...(await access.headers()), Accept: 'application/json' } }
    if (signal !== undefined) init.signal = signal
    return asAnswer(await readAnswer(await access.fetch(url.toString(), init), 'the history route'), query.channel)
  }
}
