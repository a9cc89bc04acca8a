// The app's JSON API. State changes carry the CSRF token (the csrf_token cookie, echoed in
// X-CSRF-Token) and this tab's socket id (X-Socket-ID), so the broadcast they cause skips it.

import { echoIsConfigured, withSocketId } from 'clarion-vue'

export interface User {
  id: number
  email: string
  name: string
  role: 'admin' | 'member'
  tenant_id: number
  tenant: { id: number; slug: string; name: string }
}

export interface Category {
  id: number
  tenant_id: number
  name: string
  parent_id: number | null
  version: number
  updated_at: string
}

export interface Upload {
  id: string
  tenant_id: number
  filename: string
  size: number
  received: number
  status: 'uploading' | 'done' | 'failed'
  percent: number
  url: string
}

export interface ClientConfig {
  key: string
  wsHost: string
  wsPort: number
  forceTLS: boolean
  authEndpoint: string
  userAuthEndpoint: string
  historyEndpoint: string
}

/** A refused request: its status, message and field errors (422). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errors: Record<string, string[]> = {},
  ) {
    super(message)
  }
}

export function csrfToken(): string {
  const found = document.cookie.split('; ').find((part) => part.startsWith('csrf_token='))
  return found === undefined ? '' : decodeURIComponent(found.slice('csrf_token='.length))
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' }
  let init: RequestInit = { method, headers, credentials: 'same-origin' }
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  if (method !== 'GET') {
    headers['X-CSRF-Token'] = csrfToken()
    if (echoIsConfigured()) init = withSocketId(init)
  }
  const answer = await fetch(path, init)
  const text = await answer.text()
  const data: unknown = text ? JSON.parse(text) : null
  if (!answer.ok) {
    const problem = (data ?? {}) as { message?: string; errors?: Record<string, string[]> }
    throw new ApiError(answer.status, problem.message ?? `${answer.status} ${answer.statusText}`, problem.errors ?? {})
  }
  return data as T
}
