// Cache coordination: ties channel events to the app's cached data. When, say, category.updated
// arrives, the matching slice of a Pinia store (or a query key) is patched or marked stale; and when
// a channel had to resync (events lost), everything tied to it is marked stale, since a patch may
// have been missed.

import type { ClarionBus, BusEvent } from './bus'
import { getClient } from './config'
import type { ResyncInfo } from './types'
import { getCurrentScope, onScopeDispose } from 'vue'

export interface CacheRule<TPayload = unknown> {
  /** The channel's full name as on the wire (``private-tenant.7``). */
  channel: string
  /** Event names as on the wire (a leading dot, as in Echo, is ignored). */
  events: string | string[]
  /** Apply the event's payload to the cached data (e.g. ``store.$patch``), when it carries enough. */
  patch?: (payload: TPayload, event: string) => void
  /** Mark the data stale or refetch it (e.g. ``queryClient.invalidateQueries({ queryKey })``). */
  invalidate?: (reason: { event: string } | { resync: ResyncInfo }) => void
}

/**
 * Ties rules to the bus; returns the undo (also run when the surrounding effect scope ends).
 * A rule with ``patch`` only is still invalidated on resync if it also has ``invalidate``.
 */
export function syncCache(rules: CacheRule[], bus: ClarionBus = getClient().bus): () => void {
  const undo: Array<() => void> = []
  for (const rule of rules) {
    for (const raw of Array.isArray(rule.events) ? rule.events : [rule.events]) {
      const event = raw.startsWith('.') ? raw.slice(1) : raw
      const key = `${rule.channel}:${event}` as const
      const handler = (message: BusEvent): void => {
        if (rule.patch !== undefined) rule.patch(message.data, message.event)
        else rule.invalidate?.({ event: message.event })
      }
      bus.on(key, handler)
      undo.push(() => bus.off(key, handler))
    }
  }
  const onResync = (info: ResyncInfo): void => {
    for (const rule of rules) if (rule.channel === info.channel) rule.invalidate?.({ resync: info })
  }
  bus.on('resync', onResync)
  undo.push(() => bus.off('resync', onResync))
  const stop = (): void => {
    for (const u of undo.splice(0)) u()
  }
  if (getCurrentScope() !== undefined) onScopeDispose(stop)
  return stop
}

/** A stale flag on a Pinia store (any object with $patch): ``markStale(store, 'categoriesStale')``. */
export function markStale(store: { $patch: (partial: Record<string, unknown>) => void }, key: string): () => void {
  return () => store.$patch({ [key]: true })
}
