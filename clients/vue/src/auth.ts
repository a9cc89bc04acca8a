// Channel authorization and user authentication with fetch, asking the app's headers provider
// each time: a token refreshed since the last attempt is the one sent (pusher-js keeps the headers
// it was built with, and a private channel then fails to re-authorize after a drop).

import { isRecord } from './frames'
import type { HeadersProvider } from './options'

export interface AuthRequest {
  endpoint: string
  headers: Record<string, string>
  params: Record<string, string>
  provider: HeadersProvider | undefined
  fetch: typeof fetch
}

export type AuthCallback = (error: Error | null, data: Record<string, unknown> | null) => void

export class AuthError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
    this.name = 'AuthError'
  }
}

export async function requestHeaders(request: Pick<AuthRequest, 'headers' | 'provider'>): Promise<Record<string, string>> {
  return { ...request.headers, ...(request.provider === undefined ? {} : await request.provider()) }
}

export async function postForm(request: AuthRequest, fields: Record<string, string>): Promise<Record<string, unknown>> {
  const body = new URLSearchParams({ ...fields, ...request.params })
  const response = await request.fetch(request.endpoint, {
    method: 'POST',
    headers: { ...(await requestHeaders(request)), 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
    body: body.toString(),
  })
  let answer: unknown
  try {
    answer = await response.json()
  } catch {
    answer = undefined
  }
  if (!response.ok) {
    const reason = isRecord(answer) && typeof answer.error === 'string' ? `: ${answer.error}` : ''
    throw new AuthError(response.status, `${request.endpoint} answered ${response.status}${reason}`)
  }
  if (!isRecord(answer)) throw new AuthError(response.status, `${request.endpoint} answered without a JSON object`)
  return answer
}

/** pusher-js's channelAuthorization.customHandler. */
export function channelAuthorizer(request: AuthRequest) {
  return (params: { socketId: string; channelName: string }, callback: AuthCallback): void => {
    postForm(request, { socket_id: params.socketId, channel_name: params.channelName }).then(
      (data) => callback(null, data),
      (error: unknown) => callback(error instanceof Error ? error : new Error(String(error)), null),
    )
  }
}

/** pusher-js's userAuthentication.customHandler. */
export function userAuthenticator(request: AuthRequest) {
  return (params: { socketId: string }, callback: AuthCallback): void => {
    postForm(request, { socket_id: params.socketId }).then(
      (data) => callback(null, data),
      (error: unknown) => callback(error instanceof Error ? error : new Error(String(error)), null),
    )
  }
}
