// Frames as they travel on the socket, and pusher-js's way of decoding them, so frames that come
// from elsewhere (a leader tab, the history endpoint) reach the app exactly as a socket's would.

/** A frame off the wire, its top-level fields intact (pusher-js keeps only the first four). */
export interface WireFrame {
  event: string
  channel?: string
  data?: unknown
  user_id?: string
  epoch?: string
  serial?: number
  replayed?: boolean
}

/** What pusher-js hands its channels: ``data`` parsed when it is a JSON string. */
export interface PusherEvent {
  event: string
  channel?: string
  data?: unknown
  user_id?: string
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Parses one frame's text; undefined when it is not a JSON object with an event name. */
export function parseFrame(text: string): WireFrame | undefined {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  if (!isRecord(value) || typeof value.event !== 'string') return undefined
  return value as unknown as WireFrame
}

/** The frame's position, when it carries a well-formed one. */
export function positionOf(frame: WireFrame): { epoch: string; serial: number } | undefined {
  const { epoch, serial } = frame
  if (typeof epoch === 'string' && typeof serial === 'number' && Number.isInteger(serial)) return { epoch, serial }
  return undefined
}

/** As pusher-js's Protocol.decodeMessage: a JSON string ``data`` is parsed, anything else kept. */
export function toPusherEvent(frame: WireFrame): PusherEvent {
  let data = frame.data
  if (typeof data === 'string') {
    try {
      data = JSON.parse(data)
    } catch {
      // Not JSON: pusher-js hands the string over as it is.
    }
  }
  const event: PusherEvent = { event: frame.event, data }
  if (frame.channel !== undefined) event.channel = frame.channel
  if (frame.user_id) event.user_id = frame.user_id
  return event
}

/** Cheap test before parsing: only frames that may carry a position or a Clarion marker need a look. */
export function mayMatter(text: string): boolean {
  return text.includes('"serial"') || text.includes('"clarion:')
}
