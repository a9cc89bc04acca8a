// Clarion's dashboard: polls /dashboard/api/stats for the charts and streams one app's events
// from /dashboard/api/console (Server-Sent Events). No build step, no dependency.
'use strict'

const SVG = 'http://www.w3.org/2000/svg'
const COLORS = ['#2f6fdf', '#e07b00', '#1a7f37', '#a23dbd']
const MAX_ROWS = 500
const LABELS = {
  connections: 'connections',
  channels: 'channels',
  subscriptions: 'subscriptions',
  published_per_s: 'published/s',
  delivered_per_s: 'delivered/s',
  client_events_per_s: 'client events/s',
  api_p50_ms: 'API p50',
  api_p99_ms: 'API p99',
  delivery_p50_ms: 'delivery p50',
  delivery_p99_ms: 'delivery p99',
}

let samples = []
let windowSize = 600
let intervalMs = 1000
let lastTime = 0

function svg(name, attrs) {
  const node = document.createElementNS(SVG, name)
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value))
  return node
}

function format(value) {
  if (value === null || value === undefined) return '–'
  if (Math.abs(value) >= 100 || Number.isInteger(value)) return String(Math.round(value))
  return value.toFixed(2)
}

function draw(figure) {
  const series = figure.dataset.series.split(' ')
  const width = 320
  const height = 140
  const pad = 4
  let top = 0
  for (const sample of samples) for (const name of series) if (sample[name] != null) top = Math.max(top, sample[name])
  top = top > 0 ? top * 1.1 : 1
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img' })
  chart.append(svg('line', { class: 'axis', x1: 0, y1: height - pad, x2: width, y2: height - pad }))
  const label = svg('text', { class: 'label', x: 2, y: 10 })
  label.textContent = format(top)
  chart.append(label)
  const span = Math.max(samples.length - 1, 1)
  series.forEach((name, index) => {
    const points = []
    samples.forEach((sample, i) => {
      const value = sample[name]
      if (value == null) return
      const x = (i / span) * width
      const y = height - pad - (value / top) * (height - 2 * pad)
      points.push(`${x.toFixed(1)},${y.toFixed(1)}`)
    })
    chart.append(
      svg('polyline', {
        'data-series': name,
        'data-points': points.length,
        points: points.join(' '),
        fill: 'none',
        stroke: COLORS[index % COLORS.length],
        'stroke-width': 1.5,
        'vector-effect': 'non-scaling-stroke',
      }),
    )
  })
  const legend = document.createElement('div')
  legend.className = 'legend'
  series.forEach((name, index) => {
    // The latest reported value: latency is empty for an interval with no request.
    let latest = null
    for (let i = samples.length - 1; i >= 0 && latest === null; i--) if (samples[i][name] != null) latest = samples[i][name]
    const item = document.createElement('span')
    const swatch = document.createElement('span')
    swatch.className = 'swatch'
    swatch.style.background = COLORS[index % COLORS.length]
    const value = document.createElement('span')
    value.className = 'value'
    value.id = `value-${name}`
    value.textContent = format(latest)
    item.append(swatch, `${LABELS[name] || name} `, value)
    legend.append(item)
  })
  for (const old of figure.querySelectorAll('svg, .legend')) old.remove()
  figure.append(chart, legend)
}

function setStatus(text, kind) {
  const status = document.getElementById('status')
  status.textContent = text
  status.className = `status ${kind}`
}

let appsShown = false

function showApps(apps) {
  if (appsShown) return
  appsShown = true
  const select = document.getElementById('app')
  for (const app of apps) {
    const option = document.createElement('option')
    option.value = app.id
    option.textContent = app.id
    option.dataset.payloads = String(app.debug_payloads)
    select.append(option)
  }
  notePayloads()
}

function notePayloads() {
  const option = document.getElementById('app').selectedOptions[0]
  const on = option && option.dataset.payloads === 'true'
  document.getElementById('payload-note').textContent = on
    ? 'Event data and user ids are shown: debug_payloads is on for this app.'
    : 'Event data and user ids are hidden: debug_payloads is off for this app.'
}

async function poll() {
  try {
    const response = await fetch(`/dashboard/api/stats?since=${lastTime}`, { credentials: 'same-origin' })
    if (response.status === 401) {
      window.location.assign('/dashboard')
      return
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`)
    const body = await response.json()
    windowSize = body.window
    intervalMs = body.interval * 1000
    showApps(body.apps)
    if (body.samples.length) {
      samples = samples.concat(body.samples).slice(-windowSize)
      lastTime = samples[samples.length - 1].time
    }
    const missing = document.getElementById('missing')
    missing.hidden = body.missing.length === 0
    missing.textContent = `Not reported by this server (shown empty): ${body.missing.join(', ')}`
    for (const figure of document.querySelectorAll('.chart')) draw(figure)
    setStatus(`updated ${new Date().toLocaleTimeString()}`, 'ok')
  } catch (error) {
    setStatus(`stats unavailable: ${error.message}`, 'error')
  }
  setTimeout(poll, intervalMs)
}

// --- the debug console ---

let source = null

function cell(row, text, className) {
  const td = document.createElement('td')
  td.textContent = text == null ? '' : String(text)
  if (className) td.className = className
  row.append(td)
}

function matches(row) {
  const filter = document.getElementById('filter').value.trim().toLowerCase()
  return !filter || row.dataset.search.includes(filter)
}

function addRow(event, kind) {
  const body = document.querySelector('#events tbody')
  const row = document.createElement('tr')
  row.dataset.type = event.type || kind
  const extra = {}
  for (const key of ['data', 'user_id', 'reason']) if (event[key] !== undefined && event[key] !== null) extra[key] = event[key]
  if (kind === 'dropped') {
    row.className = 'dropped'
    extra.dropped = event.dropped
  }
  const time = event.time ? new Date(event.time * 1000).toLocaleTimeString() : new Date().toLocaleTimeString()
  cell(row, time)
  cell(row, row.dataset.type)
  cell(row, event.channel)
  cell(row, event.event)
  cell(row, event.socket_id)
  cell(row, Object.keys(extra).length ? JSON.stringify(extra) : '', 'details')
  row.dataset.search = `${event.channel || ''} ${event.event || ''} ${row.dataset.type}`.toLowerCase()
  if (!matches(row)) row.classList.add('hidden')
  body.prepend(row)
  while (body.rows.length > MAX_ROWS) body.lastElementChild.remove()
}

function stop() {
  if (source) source.close()
  source = null
  document.getElementById('toggle').textContent = 'Start'
  document.getElementById('console-state').textContent = 'stopped'
}

function start() {
  const app = document.getElementById('app').value
  if (!app) return
  stop()
  const state = document.getElementById('console-state')
  source = new EventSource(`/dashboard/api/console?app=${encodeURIComponent(app)}`)
  document.getElementById('toggle').textContent = 'Stop'
  state.textContent = 'connecting…'
  source.addEventListener('hello', () => {
    state.textContent = `streaming app ${app} (events seen by this node)`
  })
  source.addEventListener('event', (message) => addRow(JSON.parse(message.data), 'event'))
  source.addEventListener('dropped', (message) => addRow(JSON.parse(message.data), 'dropped'))
  source.onerror = () => {
    state.textContent = 'disconnected; retrying…'
  }
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('toggle').addEventListener('click', () => (source ? stop() : start()))
  document.getElementById('app').addEventListener('change', () => {
    notePayloads()
    if (source) start()
  })
  document.getElementById('clear').addEventListener('click', () => {
    document.querySelector('#events tbody').replaceChildren()
  })
  document.getElementById('filter').addEventListener('input', () => {
    for (const row of document.querySelectorAll('#events tbody tr')) row.classList.toggle('hidden', !matches(row))
  })
  poll()
})
