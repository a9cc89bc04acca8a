// What a tab's view and the hub (the one socket, in the leader tab) say to each other. In a single
// tab they call each other directly; with tab sharing they travel over a BroadcastChannel, so
// everything here is plain data.

import type { Position } from './positions'
import type { ConnectionStatus, Telemetry, ClarionError, RewindSpec, CatchUpKind } from './types'

export type ViewMessage =
  | { t: 'hello'; tab: string }
  | { t: 'sub'; tab: string; channel: string; position?: Position | undefined; rewind?: RewindSpec | undefined }
  | { t: 'unsub'; tab: string; channel: string }
  | { t: 'send'; tab: string; event: string; data: unknown; channel: string }
  | { t: 'signin'; tab: string }
  | { t: 'connect'; tab: string }
  | { t: 'disconnect'; tab: string }
  | { t: 'bye'; tab: string }

export interface HubStatus {
  status: ConnectionStatus
  socketId: string | undefined
  transport: 'websocket' | 'polling' | 'none'
  attempt: number
  nextRetryAt: number | null
  lastError: ClarionError | null
  telemetry: Telemetry
}

export type HubMessage =
  | { t: 'leader'; tab: string }
  /** The leader tab is going: hold sends until the next leader announces itself. */
  | { t: 'gone'; tab: string }
  | ({ t: 'status' } & HubStatus)
  /** A frame's text as the socket (or history) carried it; ``to`` one tab only, or every tab but ``exclude``. */
  | { t: 'frame'; text: string; to?: string | undefined; exclude?: string | undefined; myID?: string | undefined }
  /** An event pusher-js already decoded (and decrypted): for private-encrypted channels. */
  | { t: 'event'; channel: string; event: string; data: unknown; position?: Position | undefined }
  | {
      t: 'caughtUp'
      channel: string
      kind: CatchUpKind
      recovered: boolean
      epoch: string | null
      serial: number
      reason?: string | undefined
    }
  | { t: 'subError'; channel: string; error: unknown }
  | { t: 'unavailable'; channel: string; reason: string }
  | { t: 'dropped'; tab: string; event: string; channel: string; reason: string }
