// The few places where this client reaches into pusher-js, kept together. pusher-js gives no
// public hook for a frame's extra fields, for its transports' close codes, or for taking over its
// reconnect timers; each tap below names what it relies on, stable across pusher-js 7 and 8.

import Pusher from 'pusher-js'
import type { Options } from 'pusher-js'
import type { PusherEvent } from './frames'

export type PusherClass = typeof Pusher
export type PusherInstance = InstanceType<PusherClass>
export type PusherOptions = Options

/**
 * A Pusher instance that does not connect by itself: ``new Pusher()`` connects at once when the
 * runtime is ready, and ``Pusher.ready()`` later connects every instance it knows. This client
 * decides when (and in which tab) a socket opens.
 */
export function quietPusher(PusherCtor: PusherClass, key: string, options: PusherOptions): PusherInstance {
  // The flag and the list are statics of pusher-js's base class; a subclass (the Node build's
  // PusherWithEncryption) only inherits them, and the base constructor reads the base's own.
  const owner = staticsOwner(PusherCtor)
  const wasReady = owner.isReady
  owner.isReady = false
  let pusher: PusherInstance
  try {
    pusher = new PusherCtor(key, options)
  } finally {
    owner.isReady = wasReady
  }
  owner.instances = owner.instances.filter((instance) => instance !== pusher)
  return pusher
}

function staticsOwner(PusherCtor: PusherClass): { isReady: boolean; instances: PusherInstance[] } {
  let owner: unknown = PusherCtor
  while (owner !== null && typeof owner === 'function' && !Object.prototype.hasOwnProperty.call(owner, 'isReady')) {
    owner = Object.getPrototypeOf(owner)
  }
  if (owner === null || typeof owner !== 'function') return PusherCtor
  return owner as unknown as { isReady: boolean; instances: PusherInstance[] }
}

/** One transport's state change, as pusher-js records it in its timeline. */
export interface TransportNote {
  cid: number
  state: string
  code?: number
  reason?: string
}

/**
 * Every transport state change (``connecting``, ``open``, ``closed`` with its close code), from the
 * instance's timeline, which each transport writes to as its state changes. Returns the undo.
 */
export function tapTransports(pusher: PusherInstance, onNote: (note: TransportNote) => void): () => void {
  const timeline = pusher.timeline as unknown as { log: (level: number, event: unknown) => void }
  const original = timeline.log
  timeline.log = function (this: unknown, level: number, event: unknown): void {
    original.call(timeline, level, event)
    const note = transportNote(event)
    if (note !== undefined) onNote(note)
  }
  return () => {
    timeline.log = original
  }
}

function transportNote(event: unknown): TransportNote | undefined {
  if (typeof event !== 'object' || event === null) return undefined
  const { cid, state, params } = event as { cid?: unknown; state?: unknown; params?: unknown }
  if (typeof cid !== 'number' || typeof state !== 'string') return undefined
  const note: TransportNote = { cid, state }
  if (typeof params === 'object' && params !== null) {
    const { code, reason } = params as { code?: unknown; reason?: unknown }
    if (typeof code === 'number') note.code = code
    if (typeof reason === 'string') note.reason = reason
  }
  return note
}

interface TransportLike {
  id: number
  emit: (name: string, data?: unknown) => unknown
}

/** The live connection's transport and its id (pusher-js's cid), once connected. */
export function liveTransport(pusher: PusherInstance): TransportLike | undefined {
  const connection = (pusher.connection as unknown as { connection?: { transport?: TransportLike } | null }).connection
  return connection?.transport ?? undefined
}

/**
 * Sees each raw frame text of the live transport before pusher-js parses it; ``filter`` returns
 * false to drop the frame (pusher-js never sees it). Must be installed in the ``connected``
 * handler: answers to the subscribes pusher-js sends then arrive in a later turn.
 */
export function tapFrames(transport: TransportLike, filter: (text: string) => boolean): void {
  const emit = transport.emit
  transport.emit = function (this: unknown, name: string, data?: unknown): unknown {
    if (name === 'message' && typeof data === 'object' && data !== null) {
      const text = (data as { data?: unknown }).data
      if (typeof text === 'string' && !filter(text)) return undefined
    }
    return emit.call(transport, name, data)
  }
}

/** Hands a decoded event to pusher-js as if its socket had received it (channel dispatch, user facade, ...). */
export function dispatch(pusher: PusherInstance, event: PusherEvent): void {
  ;(pusher.connection as unknown as { emit: (name: string, data: unknown) => void }).emit('message', event)
}

/** Sets the socket id the view reports (echo().socketId(), X-Socket-ID) while another tab holds the socket. */
export function setSocketId(pusher: PusherInstance, socketId: string | undefined): void {
  ;(pusher.connection as unknown as { socket_id: string | undefined }).socket_id = socketId
}

export function connectionState(pusher: PusherInstance): string {
  return pusher.connection.state
}
