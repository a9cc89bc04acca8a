// The connection to Clarion through clarion-vue, and what each channel does to the stores.
// Names are given as laravel-echo takes them: without the private-/presence- prefix, and with a
// leading dot for event names that have no namespace.

import { createClarion, echo, useEcho, type ClarionPlugin } from 'clarion-vue'
import { api, csrfToken, type Category, type ClientConfig, type Upload, type User } from './api'
import { useActivity, useCategories, useToasts, useUploads } from './stores'

export async function connect(user: User): Promise<ClarionPlugin> {
  const config = await api<ClientConfig>('GET', '/api/config')
  const categories = useCategories()
  const toasts = useToasts()
  const plugin = createClarion({
    broadcaster: 'reverb',
    key: config.key,
    wsHost: config.wsHost,
    wsPort: config.wsPort,
    wssPort: config.wsPort,
    forceTLS: config.forceTLS,
    enabledTransports: ['ws', 'wss'],
    authEndpoint: config.authEndpoint,
    // Asked on every (re)authorization: the CSRF token of the current session.
    authHeaders: () => ({ 'X-CSRF-Token': csrfToken() }),
    backoff: { base: 500, cap: 10_000 },
    // pusher-js checks the connection when the browser says it went offline: a pong must come
    // within 5 s, so a dead network shows as reconnecting within seconds, not after 30.
    pongTimeout: 5000,
    // Where WebSockets are blocked: read the channels' history through the app (same origin,
    // the session cookie), every 2 s, after 2 failed attempts.
    fallback: { after: 2, interval: 2000, historyEndpoint: config.historyEndpoint },
    // Missed events that cannot be replayed (the history expired, or Clarion restarted with its
    // memory): reload the categories.
    onResync: (info) => {
      if (info.channel === `private-tenant.${user.tenant_id}.categories`) {
        void categories.reload().then(() => toasts.show('Reloaded the categories after a gap in live updates.'))
      }
    },
  })
  // As Laravel apps expose Echo (which also lets a curious user try to subscribe from the
  // console); Clarion's client for its state: subscriptions, positions, telemetry.
  ;(window as unknown as { Echo: unknown }).Echo = echo()
  ;(window as unknown as { Clarion: unknown }).Clarion = plugin.client
  return plugin
}

interface Deleted {
  id: number
  ids: number[]
  version: number
}

interface Notification {
  title: string
  kind: string
}

interface UploadEvent {
  upload_id: string
  filename: string
  bytes_received?: number
  bytes_total?: number
  percent?: number
  size?: number
  url?: string
  reason?: string
}

/** Subscribes this page to the tenant's channels; call inside the main view's setup(). */
export function listen(user: User): void {
  const categories = useCategories()
  const toasts = useToasts()
  const activity = useActivity()
  const uploads = useUploads()
  const channel = `tenant.${user.tenant_id}.categories`
  const created = useEcho<Category>(channel, '.category.created', (c) => categories.upsert(c))
  // Subscribe, then take the snapshot: the categories loaded at start may predate the
  // subscription (a slow or offline network), and what changed in between would be missed. Once
  // subscribed, every later change arrives as an event (or through recovery), and versions make
  // the snapshot and the events agree whatever their order.
  let first = true
  ;(created.channel() as unknown as { subscribed: (cb: () => void) => unknown }).subscribed(() => {
    if (!first) return
    first = false
    void categories.reload()
  })
  useEcho<Category>(channel, '.category.updated', (c) => categories.upsert(c))
  useEcho<Deleted>(channel, '.category.deleted', (d) => categories.remove(d.ids, d.version))
  useEcho<Notification>(`user.${user.id}`, '.notification', (n) => toasts.show(n.title))
  if (user.role === 'admin') useEcho<{ actor: string; text: string; at: string }>(`tenant.${user.tenant_id}.activity`, '.activity', (a) => activity.add(a))

  const watched = new Map<string, () => void>()
  const watch = (upload: Upload): void => {
    uploads.put(upload)
    if (upload.status !== 'uploading' || watched.has(upload.id)) return
    // A cache channel: joining mid-upload gives the current progress at once.
    const handle = useEcho<UploadEvent>(
      `cache-tenant.${user.tenant_id}.uploads.${upload.id}`,
      ['.MediaUploadProgress', '.MediaUploadCompleted', '.MediaUploadFailed'],
      (e) => {
        if (e.url !== undefined && e.reason === undefined) {
          uploads.patch(e.upload_id, { status: 'done', received: e.size ?? 0, percent: 100, url: e.url })
        } else if (e.reason !== undefined) {
          uploads.patch(e.upload_id, { status: 'failed' })
        } else {
          uploads.patch(e.upload_id, { received: e.bytes_received ?? 0, percent: e.percent ?? 0 })
          return
        }
        watched.get(e.upload_id)?.()
        watched.delete(e.upload_id)
      },
    )
    watched.set(upload.id, handle.stop)
  }
  useEcho<UploadEvent & { size: number; by: string }>(`tenant.${user.tenant_id}.uploads`, '.upload.started', (e) =>
    watch({
      id: e.upload_id,
      tenant_id: user.tenant_id,
      filename: e.filename,
      size: e.size,
      received: 0,
      status: 'uploading',
      percent: 0,
      url: `/api/uploads/${e.upload_id}/file`,
    }),
  )
  void api<{ uploads: Upload[] }>('GET', '/api/uploads').then((answer) => {
    for (const upload of [...answer.uploads].reverse()) watch(upload)
  })
}
