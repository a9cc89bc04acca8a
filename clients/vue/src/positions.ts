// Each channel's last position (epoch, serial), as carried by Clarion's kept events. It tells a
// resume where to start and lets a tab drop an event it already delivered (after a resume, a
// change of leader tab, or a switch between polling and the socket).

/** A channel's place in its history. ``epoch`` '' marks a channel known to have had no event yet. */
export interface Position {
  epoch: string
  serial: number
}

/**
 * What an event's position means for the channel:
 * - ``first``: the first position known for it;
 * - ``next``: the one after the last;
 * - ``duplicate``: at or before the last, in the same epoch: already delivered, to drop;
 * - ``gap``: later than the next one: events were missed;
 * - ``epoch``: another epoch: the history the last position belonged to is gone.
 */
export type Verdict = 'first' | 'next' | 'duplicate' | 'gap' | 'epoch'

export class Positions {
  private readonly last = new Map<string, Position>()

  get(channel: string): Position | undefined {
    const last = this.last.get(channel)
    return last === undefined ? undefined : { epoch: last.epoch, serial: last.serial }
  }

  set(channel: string, position: Position): void {
    this.last.set(channel, { epoch: position.epoch, serial: position.serial })
  }

  forget(channel: string): void {
    this.last.delete(channel)
  }

  channels(): string[] {
    return [...this.last.keys()]
  }

  /** Judges an arriving event's position and, unless it is a duplicate, makes it the channel's last. */
  accept(channel: string, epoch: string, serial: number): Verdict {
    const last = this.last.get(channel)
    if (last === undefined) {
      this.last.set(channel, { epoch, serial })
      return 'first'
    }
    if (last.epoch === '') {
      // The channel was known to be empty: whatever comes first is its beginning.
      this.last.set(channel, { epoch, serial })
      return 'first'
    }
    if (last.epoch !== epoch) {
      this.last.set(channel, { epoch, serial })
      return 'epoch'
    }
    if (serial <= last.serial) return 'duplicate'
    const verdict: Verdict = serial === last.serial + 1 ? 'next' : 'gap'
    last.serial = serial
    return verdict
  }
}

/** The earlier of two positions of one epoch; with different epochs, neither can vouch for the other: undefined. */
export function earliest(a: Position | undefined, b: Position | undefined): Position | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  if (a.epoch !== b.epoch) return undefined
  return a.serial <= b.serial ? a : b
}

/**
 * Whether a catch-up answer that recovered nothing still says where the channel stands: after
 * these reasons its ``epoch``/``serial`` are the channel's current position; after the others
 * (``history_off``, ``rate_limited``, ``busy``, ``unavailable``) the position is unknown.
 */
export function tellsPosition(reason: string | undefined): boolean {
  return reason === undefined || reason === 'epoch_changed' || reason === 'too_old' || reason === 'unknown_position' || reason === 'overflow'
}
