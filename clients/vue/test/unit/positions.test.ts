import { describe, expect, it } from 'vitest'
import { earliest, Positions } from '../../src/positions'

describe('positions and duplicate dropping', () => {
  it('judges each position against the last', () => {
    const p = new Positions()
    expect(p.accept('c', 'e1', 5)).toBe('first')
    expect(p.accept('c', 'e1', 6)).toBe('next')
    expect(p.accept('c', 'e1', 6)).toBe('duplicate')
    expect(p.accept('c', 'e1', 3)).toBe('duplicate')
    expect(p.accept('c', 'e1', 9)).toBe('gap')
    expect(p.get('c')).toEqual({ epoch: 'e1', serial: 9 })
    expect(p.accept('c', 'e2', 1)).toBe('epoch')
    expect(p.get('c')).toEqual({ epoch: 'e2', serial: 1 })
  })

  it('a duplicate leaves the position where it was', () => {
    const p = new Positions()
    p.accept('c', 'e', 10)
    p.accept('c', 'e', 4)
    expect(p.get('c')).toEqual({ epoch: 'e', serial: 10 })
  })

  it('after a channel known empty, anything is its beginning', () => {
    const p = new Positions()
    p.set('c', { epoch: '', serial: 0 })
    expect(p.accept('c', 'e9', 1)).toBe('first')
  })

  it('the earliest of two positions only within one epoch', () => {
    expect(earliest({ epoch: 'a', serial: 3 }, { epoch: 'a', serial: 5 })).toEqual({ epoch: 'a', serial: 3 })
    expect(earliest({ epoch: 'a', serial: 3 }, undefined)).toEqual({ epoch: 'a', serial: 3 })
    expect(earliest({ epoch: 'a', serial: 3 }, { epoch: 'b', serial: 1 })).toBeUndefined()
  })
})
