// Pinia stores: the signed-in user, the tenant's categories (patched by broadcasts, reloaded on
// a resync), toasts, uploads and the admins' activity feed.

import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { api, type Category, type Upload, type User } from './api'

export const useSession = defineStore('session', () => {
  const user = ref<User | null>(null)
  const checked = ref(false)
  async function load(): Promise<void> {
    try {
      user.value = await api<User>('GET', '/api/me')
    } catch {
      user.value = null
    }
    checked.value = true
  }
  async function login(email: string, password: string): Promise<void> {
    const answer = await api<{ user: User }>('POST', '/api/login', { email, password })
    user.value = answer.user
  }
  async function logout(): Promise<void> {
    await api('POST', '/api/logout')
    user.value = null
  }
  return { user, checked, load, login, logout }
})

export interface CategoryNode {
  category: Category
  depth: number
}

/**
 * Categories by id. Broadcasts patch it; a resync (missed events that could not be recovered)
 * reloads it. Each category has a version, so an event older than what is shown (a queued
 * broadcast arriving after a reload) changes nothing, and a deleted id stays deleted.
 */
export const useCategories = defineStore('categories', () => {
  const byId = ref(new Map<number, Category>())
  const gone = new Map<number, number>() // deleted id -> the version that deleted it
  const loaded = ref(false)
  const reloads = ref(0)

  async function reload(): Promise<void> {
    const answer = await api<{ categories: Category[] }>('GET', '/api/categories')
    const fresh = new Map<number, Category>()
    for (const c of answer.categories) {
      fresh.set(c.id, c)
      gone.delete(c.id)
    }
    byId.value = fresh
    loaded.value = true
    reloads.value++
  }

  function upsert(category: Category): void {
    const deletedAt = gone.get(category.id)
    if (deletedAt !== undefined && deletedAt >= category.version) return
    const shown = byId.value.get(category.id)
    if (shown !== undefined && shown.version >= category.version) return
    byId.value.set(category.id, category)
  }

  function remove(ids: number[], version: number): void {
    for (const id of ids) {
      gone.set(id, Math.max(version, gone.get(id) ?? 0, byId.value.get(id)?.version ?? 0))
      byId.value.delete(id)
    }
  }

  /** Depth-first, siblings by name: the tree as rows, and the parent dropdown's options. */
  const ordered = computed<CategoryNode[]>(() => {
    const children = new Map<number | null, Category[]>()
    for (const c of byId.value.values()) {
      const parent = c.parent_id !== null && byId.value.has(c.parent_id) ? c.parent_id : null
      const list = children.get(parent) ?? []
      list.push(c)
      children.set(parent, list)
    }
    const rows: CategoryNode[] = []
    const walk = (parent: number | null, depth: number): void => {
      const list = (children.get(parent) ?? []).sort((a, b) => a.name.localeCompare(b.name) || a.id - b.id)
      for (const category of list) {
        rows.push({ category, depth })
        walk(category.id, depth + 1)
      }
    }
    walk(null, 0)
    return rows
  })

  /** The ids inside ``id`` (itself included): not offered as its new parent. */
  function subtree(id: number): Set<number> {
    const found = new Set([id])
    let grew = true
    while (grew) {
      grew = false
      for (const c of byId.value.values()) {
        if (c.parent_id !== null && found.has(c.parent_id) && !found.has(c.id)) {
          found.add(c.id)
          grew = true
        }
      }
    }
    return found
  }

  return { byId, loaded, reloads, reload, upsert, remove, ordered, subtree }
})

export interface Toast {
  id: number
  text: string
  kind: 'info' | 'error'
}

export const useToasts = defineStore('toasts', () => {
  const list = ref<Toast[]>([])
  let next = 1
  function show(text: string, kind: Toast['kind'] = 'info', ms = 8000): void {
    const id = next++
    list.value.push({ id, text, kind })
    if (list.value.length > 5) list.value.shift()
    setTimeout(() => dismiss(id), ms)
  }
  function dismiss(id: number): void {
    list.value = list.value.filter((t) => t.id !== id)
  }
  return { list, show, dismiss }
})

export const useUploads = defineStore('uploads', () => {
  const byId = ref(new Map<string, Upload>())
  const recent = computed(() => [...byId.value.values()].reverse().slice(0, 8))
  function put(upload: Upload): void {
    byId.value.set(upload.id, upload)
  }
  function patch(id: string, change: Partial<Upload>): void {
    const shown = byId.value.get(id)
    if (shown !== undefined) byId.value.set(id, { ...shown, ...change })
  }
  return { byId, recent, put, patch }
})

export interface ActivityLine {
  actor: string
  text: string
  at: string
}

export const useActivity = defineStore('activity', () => {
  const lines = ref<ActivityLine[]>([])
  function add(line: ActivityLine): void {
    lines.value = [line, ...lines.value].slice(0, 10)
  }
  return { lines, add }
})
