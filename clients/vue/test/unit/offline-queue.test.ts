import { describe, expect, it } from 'vitest'
import { OfflineQueue, type QueuedSend } from '../../src/offline-queue'

function queue(maxSize = 3, maxAge = 1000) {
  let now = 0
  const drops: Array<[string, string]> = []
  const q = new OfflineQueue({
    maxSize,
    maxAge,
    now: () => now,
    onDrop: (send: QueuedSend, reason) => drops.push([String((send.data as { n: number }).n), reason]),
  })
  return { q, drops, tick: (ms: number) => (now += ms) }
}

describe('the offline queue of client events', () => {
  it('sends what waited, oldest first, once', () => {
    const { q } = queue()
    q.push('client-a', { n: 1 }, 'private-c')
    q.push('client-a', { n: 2 }, 'private-c')
    const sent: number[] = []
    expect(q.flush((item) => (sent.push((item.data as { n: number }).n), true))).toBe(2)
    expect(sent).toEqual([1, 2])
    expect(q.flush(() => true)).toBe(0)
  })

  it('drops the oldest, visibly, when full', () => {
    const { q, drops } = queue(2)
    for (const n of [1, 2, 3]) q.push('client-a', { n }, 'private-c')
    expect(drops).toEqual([['1', 'overflow']])
    expect(q.size).toBe(2)
  })

  it('drops, visibly, what is too old to be worth sending', () => {
    const { q, drops, tick } = queue(5, 1000)
    q.push('client-a', { n: 1 }, 'private-c')
    tick(600)
    q.push('client-a', { n: 2 }, 'private-c')
    tick(600)
    const sent: unknown[] = []
    q.flush((item) => (sent.push(item.data), true))
    expect(drops).toEqual([['1', 'expired']])
    expect(sent).toEqual([{ n: 2 }])
  })

  it('keeps what cannot be sent yet (its channel is not back) for a later flush', () => {
    const { q } = queue()
    q.push('client-a', { n: 1 }, 'private-a')
    q.push('client-a', { n: 2 }, 'private-b')
    expect(q.flush((item) => item.channel === 'private-b')).toBe(1)
    expect(q.size).toBe(1)
  })

  it('drops a channel’s waiting sends when the channel is left', () => {
    const { q, drops } = queue()
    q.push('client-a', { n: 1 }, 'private-a')
    q.dropChannel('private-a')
    expect(drops).toEqual([['1', 'left']])
  })

  it('with no room at all, drops at once', () => {
    const { q, drops } = queue(0)
    q.push('client-a', { n: 1 }, 'private-a')
    expect(drops).toEqual([['1', 'overflow']])
  })
})
