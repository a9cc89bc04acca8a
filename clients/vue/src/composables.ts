// @laravel/echo-vue's composables, with the same names, signatures and reference counting, on
// Clarion's client. Three of its bugs are fixed: a change of dependencies rebinds the listeners
// without leaving the channel (no gap), the composables work outside setup() (stop() undoes them),
// and the connection status reports "reconnecting" (and "polling").

import type { BroadcastDriver } from 'laravel-echo'
import {
  effectScope,
  getCurrentInstance,
  getCurrentScope,
  onMounted,
  onScopeDispose,
  onUnmounted,
  ref,
  watch,
  type Ref,
} from 'vue'
import { getClient } from './config'
import type {
  BroadcastNotification,
  Channel,
  ChannelReturnType,
  ChannelHandle,
  ConnectionStatus,
  Dependency,
  EchoHandle,
  EventName,
  InferEventPayload,
  ModelEvents,
  ModelPayload,
} from './types'

type Listenable = {
  listen: (event: string, callback: CallableFunction) => unknown
  stopListening: (event: string, callback?: CallableFunction) => unknown
}

const toArray = <T>(item: T | T[]): T[] => (Array.isArray(item) ? item : [item])

function describeChannel(channelName: string, visibility: Channel['visibility']): Channel {
  return {
    name: channelName,
    id: ['private', 'presence'].includes(visibility) ? `${visibility}-${channelName}` : channelName,
    visibility,
  }
}

/**
 * Runs ``start`` now, or when the component mounts inside setup(); ``stop`` when it unmounts, when
 * the surrounding effect scope ends, or when the returned function is called (once).
 */
function lifecycle(start: () => void, stop: () => void): () => void {
  let stopped = false
  const once = (): void => {
    if (stopped) return
    stopped = true
    stop()
  }
  if (getCurrentInstance() !== null) {
    onMounted(() => {
      if (!stopped) start()
    })
    onUnmounted(once)
  } else {
    start()
    if (getCurrentScope() !== undefined) onScopeDispose(once)
  }
  return once
}

// Overload for automatic type inference from event name
export function useEcho<
  TEvent extends EventName = EventName,
  TDriver extends BroadcastDriver = BroadcastDriver,
  TVisibility extends Channel['visibility'] = 'private',
>(
  channelName: string,
  event: TEvent,
  callback: (payload: InferEventPayload<TEvent>) => void,
  dependencies?: Dependency[],
  visibility?: TVisibility,
): EchoHandle<ChannelReturnType<TDriver, TVisibility>>

// Overload for multiple events with automatic type inference
export function useEcho<
  TEvent extends EventName = EventName,
  TDriver extends BroadcastDriver = BroadcastDriver,
  TVisibility extends Channel['visibility'] = 'private',
>(
  channelName: string,
  event: TEvent[],
  callback: (payload: InferEventPayload<TEvent>) => void,
  dependencies?: Dependency[],
  visibility?: TVisibility,
): EchoHandle<ChannelReturnType<TDriver, TVisibility>>

// Overload for explicit payload type (backward compatibility)
export function useEcho<
  TPayload,
  TDriver extends BroadcastDriver = BroadcastDriver,
  TVisibility extends Channel['visibility'] = 'private',
>(
  channelName: string,
  event?: string | string[],
  callback?: (payload: TPayload) => void,
  dependencies?: Dependency[],
  visibility?: TVisibility,
): EchoHandle<ChannelReturnType<TDriver, TVisibility>>

export function useEcho<
  TPayload,
  TDriver extends BroadcastDriver = BroadcastDriver,
  TVisibility extends Channel['visibility'] = 'private',
>(
  channelName: string,
  event: string | string[] = [],
  callback: (payload: TPayload) => void = () => {},
  dependencies: Dependency[] = [],
  visibility: TVisibility = 'private' as TVisibility,
): EchoHandle<ChannelReturnType<TDriver, TVisibility>> {
  const client = getClient()
  const channel = describeChannel(channelName, visibility)
  const subscription = client.join(channel) as unknown as Listenable
  const events = toArray(event)
  // One stable function per call: rebinding after a change of dependencies swaps nothing the
  // channel holds, and the latest callback is always the one called.
  const current = { callback }
  const handler = (payload: TPayload): void => current.callback(payload)
  let listening = false
  let joined = true

  const listen = (): void => {
    if (listening || !joined) return
    for (const e of events) subscription.listen(e, handler)
    listening = true
  }
  const stopListening = (): void => {
    if (!listening) return
    for (const e of events) subscription.stopListening(e, handler)
    listening = false
  }
  const tearDown = (leaveAll = false): void => {
    stopListening()
    if (!joined) return
    joined = false
    client.leave(channel, leaveAll)
  }

  const scope = effectScope()
  if (dependencies.length > 0) {
    scope.run(() =>
      watch(
        () => dependencies,
        () => {
          // Rebind, keep the channel: leaving it would lose the events of the gap.
          stopListening()
          listen()
        },
        { deep: true },
      ),
    )
  }
  const stop = lifecycle(listen, () => {
    scope.stop()
    tearDown()
  })

  return {
    leaveChannel: tearDown,
    leave: () => tearDown(true),
    stopListening,
    listen,
    channel: () => subscription as unknown as ChannelReturnType<TDriver, TVisibility>,
    stop,
  }
}

export const useEchoNotification = <TPayload, TDriver extends BroadcastDriver = BroadcastDriver>(
  channelName: string,
  callback: (payload: BroadcastNotification<TPayload>) => void = () => {},
  event: string | string[] = [],
  dependencies: Dependency[] = [],
): EchoHandle<ChannelReturnType<TDriver, 'private'>> => {
  const result = useEcho<BroadcastNotification<TPayload>, TDriver, 'private'>(channelName, [], callback, dependencies, 'private')
  const events = toArray(event).flatMap((e) => (e.includes('.') ? [e, e.replace(/\./g, '\\')] : [e, e.replace(/\\/g, '.')]))
  let listening = false
  const notificationChannel = (): {
    notification: (cb: CallableFunction) => unknown
    stopListeningForNotification: (cb: CallableFunction) => unknown
  } => result.channel() as never
  const cb = (notification: BroadcastNotification<TPayload>): void => {
    if (!listening) return
    if (events.length === 0 || events.includes(notification.type)) callback(notification)
  }
  const listen = (): void => {
    if (listening) return
    notificationChannel().notification(cb)
    listening = true
  }
  const stopListening = (): void => {
    if (!listening) return
    notificationChannel().stopListeningForNotification(cb)
    listening = false
  }
  const stop = lifecycle(listen, () => {
    stopListening()
    result.stop()
  })
  return { ...result, stopListening, listen, stop }
}

export const useEchoPresence = <TPayload, TDriver extends BroadcastDriver = BroadcastDriver>(
  channelName: string,
  event: string | string[] = [],
  callback: (payload: TPayload) => void = () => {},
  dependencies: Dependency[] = [],
): EchoHandle<ChannelReturnType<TDriver, 'presence'>> =>
  useEcho<TPayload, TDriver, 'presence'>(channelName, event, callback, dependencies, 'presence')

export const useEchoPublic = <TPayload, TDriver extends BroadcastDriver = BroadcastDriver>(
  channelName: string,
  event: string | string[] = [],
  callback: (payload: TPayload) => void = () => {},
  dependencies: Dependency[] = [],
): EchoHandle<ChannelReturnType<TDriver, 'public'>> =>
  useEcho<TPayload, TDriver, 'public'>(channelName, event, callback, dependencies, 'public')

export function useChannel<TDriver extends BroadcastDriver = BroadcastDriver, TVisibility extends Channel['visibility'] = 'private'>(
  channelName: string,
  visibility: TVisibility = 'private' as TVisibility,
): ChannelHandle<ChannelReturnType<TDriver, TVisibility>> {
  const client = getClient()
  const channel = describeChannel(channelName, visibility)
  const subscription = client.join(channel)
  let joined = true
  const tearDown = (leaveAll = false): void => {
    if (!joined) return
    joined = false
    client.leave(channel, leaveAll)
  }
  const stop = lifecycle(
    () => {},
    () => tearDown(),
  )
  return {
    leaveChannel: tearDown,
    leave: () => tearDown(true),
    channel: () => subscription as unknown as ChannelReturnType<TDriver, TVisibility>,
    stop,
  }
}

export const usePresenceChannel = <TDriver extends BroadcastDriver = BroadcastDriver>(
  channelName: string,
): ChannelHandle<ChannelReturnType<TDriver, 'presence'>> => useChannel<TDriver, 'presence'>(channelName, 'presence')

export const usePublicChannel = <TDriver extends BroadcastDriver = BroadcastDriver>(
  channelName: string,
): ChannelHandle<ChannelReturnType<TDriver, 'public'>> => useChannel<TDriver, 'public'>(channelName, 'public')

export const useEchoModel = <TPayload, TModel extends string, TDriver extends BroadcastDriver = BroadcastDriver>(
  model: TModel,
  identifier: string | number,
  event: ModelEvents<TModel> | ModelEvents<TModel>[] = [],
  callback: (payload: ModelPayload<TPayload>) => void = () => {},
  dependencies: Dependency[] = [],
): EchoHandle<ChannelReturnType<TDriver, 'private'>> =>
  useEcho<ModelPayload<TPayload>, TDriver, 'private'>(
    `${model}.${identifier}`,
    toArray(event).map((e) => (e.startsWith('.') ? e : `.${e}`)),
    callback,
    dependencies,
    'private',
  )

function useConnectionChange(callback: (status: ConnectionStatus) => void, invokeOnMount: boolean): () => void {
  const client = getClient()
  let unsubscribe: (() => void) | undefined
  return lifecycle(
    () => {
      if (invokeOnMount) callback(client.status())
      unsubscribe = client.onStatus(callback)
    },
    () => unsubscribe?.(),
  )
}

/** The connection's status, kept current: includes ``reconnecting`` and ``polling``. */
export const useConnectionStatus = (): Ref<ConnectionStatus> => {
  const client = getClient()
  const status = ref<ConnectionStatus>(client.status())
  useConnectionChange((next) => {
    status.value = next
  }, true)
  return status
}

export const useSocketId = (): Ref<string | undefined> => {
  const client = getClient()
  const socketId = ref<string | undefined>(client.socketId())
  useConnectionChange(() => {
    socketId.value = client.socketId()
  }, false)
  return socketId
}
