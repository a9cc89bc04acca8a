// clarion-vue: @laravel/echo-vue's API on a client with reconnect backoff, missed-message
// recovery, a polling fallback, one socket for all tabs, a Pinia store and an event bus.

import type { ClarionBus } from './bus'
import { getClient } from './config'

export {
  useChannel,
  useConnectionStatus,
  useEcho,
  useEchoModel,
  useEchoNotification,
  useEchoPresence,
  useEchoPublic,
  usePresenceChannel,
  usePublicChannel,
  useSocketId,
} from './composables'
export { configureEcho, createClarion, echo, echoIsConfigured, getClient as useClarion, resetClarion } from './config'
export type { ClarionPlugin } from './config'
export type { ClarionOptions, ClarionSettings, FallbackOptions, HeadersProvider } from './options'
export type {
  BroadcastNotification,
  CatchUpKind,
  Channel,
  ChannelHandle,
  ChannelReturnType,
  ClarionError,
  ConnectionStatus,
  Dependency,
  EchoHandle,
  EventName,
  InferEventPayload,
  LastEvent,
  ModelEvents,
  ModelName,
  ModelPayload,
  ResyncInfo,
  RewindSpec,
  SubscriptionState,
  SubscriptionStatus,
  Telemetry,
} from './types'
export { ClarionClient } from './client'
export type { ClarionState } from './view'
export { useClarionStore } from './store'
export { createBus } from './bus'
export type { BusEvent, BusEvents, ClarionBus, DroppedInfo } from './bus'
export { axiosToOthers, fetchToOthers, withSocketId, SOCKET_ID_HEADER } from './others'
export type { AxiosLike, AxiosRequestLike } from './others'
export { markStale, syncCache } from './cache'
export type { CacheRule } from './cache'
export { backoffCeiling, backoffDelay, classifyClose, DEFAULT_BACKOFF } from './backoff'
export type { BackoffOptions, CloseClass } from './backoff'
export { HistoryError } from './history'
export type { HistoryAnswer } from './history'

/** The bus of the configured client. */
export function useBus(): ClarionBus {
  return getClient().bus
}
