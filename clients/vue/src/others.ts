// toOthers: the app's requests name this connection's socket in X-Socket-ID, so the backend can
// leave the sender out of the broadcast its request causes.

import { getClient } from './config'

export const SOCKET_ID_HEADER = 'X-Socket-ID'

function currentSocketId(): string | undefined {
  return getClient().socketId()
}

/** ``init`` with X-Socket-ID added (when connected), for fetch. */
export function withSocketId(init: RequestInit = {}): RequestInit {
  const socketId = currentSocketId()
  if (socketId === undefined) return init
  const headers = new Headers(init.headers)
  headers.set(SOCKET_ID_HEADER, socketId)
  return { ...init, headers }
}

/** fetch, with X-Socket-ID. */
export function fetchToOthers(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  return fetch(input, withSocketId(init))
}

/** The part of axios this needs: a request interceptor. */
export interface AxiosLike {
  interceptors: {
    request: {
      use: (onFulfilled: (config: AxiosRequestLike) => AxiosRequestLike) => number
      eject?: (id: number) => void
    }
  }
}

export interface AxiosRequestLike {
  headers?: Record<string, unknown> | { set?: (name: string, value: string) => unknown } | undefined
}

/** Adds X-Socket-ID to every request of this axios instance; returns the undo. */
export function axiosToOthers(axios: AxiosLike): () => void {
  const id = axios.interceptors.request.use((config) => {
    const socketId = currentSocketId()
    if (socketId === undefined) return config
    const headers = config.headers as { set?: (name: string, value: string) => unknown } & Record<string, unknown>
    if (headers !== undefined && typeof headers.set === 'function') headers.set(SOCKET_ID_HEADER, socketId)
    else config.headers = { ...(config.headers as Record<string, unknown> | undefined), [SOCKET_ID_HEADER]: socketId }
    return config
  })
  return () => axios.interceptors.request.eject?.(id)
}
