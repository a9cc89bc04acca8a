// The global event bus: every event a channel delivers is re-emitted as "channel:event", so a
// component can react to updates without holding the channel itself. mitt underneath.

import mitt, { type Emitter, type Handler } from 'mitt'
import type { ConnectionStatus, ResyncInfo } from './types'

/** A channel event on the bus. */
export interface BusEvent<TPayload = unknown> {
  channel: string
  event: string
  data: TPayload
}

export interface DroppedInfo {
  channel: string
  event: string
  reason: string
}

/**
 * The bus's events: ``"<channel>:<event>"`` for channel events (the names as on the wire, e.g.
 * ``private-orders.1:App\\Events\\OrderShipped``), plus the client's own notices.
 */
export type BusEvents = {
  [key: `${string}:${string}`]: BusEvent
  resync: ResyncInfo
  status: ConnectionStatus
  dropped: DroppedInfo
}

export type ClarionBus = Emitter<BusEvents>

export function createBus(): ClarionBus {
  return mitt<BusEvents>()
}

export type { Handler }
