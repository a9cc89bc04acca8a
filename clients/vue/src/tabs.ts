// One socket for all tabs of an origin: the tabs elect a leader with a Web Lock (held for the
// leader's lifetime, so the browser hands it to the next tab when the leader goes, however it goes)
// and talk over a BroadcastChannel. The leader runs the hub; every tab, the leader's included,
// keeps its own view, subscriptions and reference counts.

import type { HubMessage, ViewMessage } from './messages'

export interface LockManagerLike {
  request(name: string, callback: () => Promise<void>): Promise<unknown>
}

export interface BroadcastChannelLike {
  postMessage(message: unknown): void
  close(): void
  onmessage: ((event: { data: unknown }) => void) | null
}

export interface TabsEnvironment {
  locks: LockManagerLike
  BroadcastChannel: new (name: string) => BroadcastChannelLike
}

export interface TabsHooks {
  /** This tab won the election: start a hub whose messages go through ``post``; returns its inbox. */
  lead(post: (message: HubMessage) => void): { receive(message: ViewMessage): void; stop(): void }
  /** Where the hub's messages for this tab go. */
  toView(message: HubMessage): void
  /** Gives the view a way to reach the hub (undefined while no leader is known). */
  attach(link: ((message: ViewMessage) => void) | undefined): void
  becameLeader(): void
}

type Envelope = { from: 'hub'; message: HubMessage } | { from: 'view'; message: ViewMessage }

function isEnvelope(value: unknown): value is Envelope {
  if (typeof value !== 'object' || value === null) return false
  const { from, message } = value as { from?: unknown; message?: unknown }
  return (from === 'hub' || from === 'view') && typeof message === 'object' && message !== null
}

/** Whether this environment can share one connection between tabs. */
export function tabsEnvironment(): TabsEnvironment | undefined {
  const nav = typeof navigator !== 'undefined' ? (navigator as { locks?: LockManagerLike }) : undefined
  const Channel = (globalThis as { BroadcastChannel?: TabsEnvironment['BroadcastChannel'] }).BroadcastChannel
  if (nav?.locks === undefined || Channel === undefined) return undefined
  return { locks: nav.locks, BroadcastChannel: Channel }
}

export class TabLink {
  leader = false
  private readonly channel: BroadcastChannelLike
  private hub: { receive(message: ViewMessage): void; stop(): void } | undefined
  private attached = false
  private release: (() => void) | undefined
  private closed = false

  constructor(
    private readonly name: string,
    private readonly tab: string,
    private readonly env: TabsEnvironment,
    private readonly hooks: TabsHooks,
  ) {
    this.channel = new env.BroadcastChannel(`clarion-vue:${name}`)
    this.channel.onmessage = (event) => this.onMessage(event.data)
  }

  start(): void {
    // Find a leader already there; it answers with its status.
    this.channel.postMessage({ from: 'view', message: { t: 'hello', tab: this.tab } } satisfies Envelope)
    void this.env.locks.request(`clarion-vue:leader:${this.name}`, () => this.lead())
  }

  /** This tab is going away: a leader hands over (the lock goes with the tab), a follower lets go of its channels. */
  close(): void {
    if (this.closed) return
    this.closed = true
    if (this.leader) {
      this.hub?.stop()
      this.hub = undefined
      this.channel.postMessage({ from: 'hub', message: { t: 'gone', tab: this.tab } } satisfies Envelope)
    } else {
      this.channel.postMessage({ from: 'view', message: { t: 'bye', tab: this.tab } } satisfies Envelope)
    }
    this.release?.()
    this.channel.close()
  }

  private lead(): Promise<void> {
    if (this.closed) return Promise.resolve()
    this.leader = true
    const post = (message: HubMessage): void => {
      this.hooks.toView(message)
      if (!this.closed) this.channel.postMessage({ from: 'hub', message } satisfies Envelope)
    }
    this.hub = this.hooks.lead(post)
    const hub = this.hub
    this.attached = true
    this.hooks.becameLeader()
    this.hooks.attach((message) => hub.receive(message))
    post({ t: 'leader', tab: this.tab })
    return new Promise<void>((resolve) => {
      this.release = resolve
    })
  }

  private onMessage(data: unknown): void {
    if (this.closed || !isEnvelope(data)) return
    if (data.from === 'view') {
      if (this.leader) this.hub?.receive(data.message)
      return
    }
    if (this.leader) return
    const message = data.message
    if (message.t === 'gone') {
      this.attached = false
      this.hooks.attach(undefined)
    } else if (message.t === 'leader' || !this.attached) {
      // A (new) leader: tell it everything this tab needs, with this tab's positions.
      this.attached = true
      this.hooks.attach((m) => this.channel.postMessage({ from: 'view', message: m } satisfies Envelope))
    }
    this.hooks.toView(message)
  }
}
