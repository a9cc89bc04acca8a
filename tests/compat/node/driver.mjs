// Drives one real Pusher client (pusher-js, or laravel-echo on top of it) for the Python tests.
//
//   node driver.mjs --host 127.0.0.1 --port 6001 --key KEY --auth-endpoint http://127.0.0.1:PORT/auth
//
// Every option can also come from the environment (CLARION_HOST, CLARION_PORT, CLARION_APP_KEY,
// CLARION_AUTH_ENDPOINT). Commands arrive as JSON lines on stdin; observations leave as JSON lines
// on stdout, one write per line. Library logs and driver diagnostics go to stderr.
//
// Commands ({"cmd": ..., "id": optional, echoed in the "ack"}):
//   pusher-js   connect {raw?}           subscribe {channel}     bind {channel, event}
//               unsubscribe {channel}    trigger {channel, event, data}
//               disconnect               state
//   laravel-echo  echo_connect {raw?, namespace?}
//                 echo_listen {kind: channel|private|encryptedPrivate, channel, event}
//                 echo_leave {channel}
//   both        exit
//
// Observations ({"type": ..., "t": ms since start}):
//   ready, ack {cmd, id, ok, error?}, state {previous, current}, connected {socket_id},
//   connection_error {error}, subscription_succeeded {channel}, subscription_error {channel, data},
//   subscription_count {channel, data}, event {channel, event, data, via},
//   message {event, channel, data} (every frame received, only with raw: true), fatal {error}
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import readline from 'node:readline';
import { parseArgs } from 'node:util';

const require = createRequire(import.meta.url);
// The Node build of pusher-js: faye-websocket and an XMLHttpRequest polyfill bundled, and
// tweetnacl wired in, so private-encrypted channels work as in the browser.
const Pusher = require('pusher-js');
const installedVersion = (name) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url), 'utf8')).version;
const PUSHER_JS_VERSION = installedVersion('pusher-js');
const ECHO_VERSION = installedVersion('laravel-echo');
const { default: Echo } = await import('laravel-echo');

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: process.env.CLARION_HOST ?? '127.0.0.1' },
    port: { type: 'string', default: process.env.CLARION_PORT ?? '6001' },
    key: { type: 'string', default: process.env.CLARION_APP_KEY ?? '' },
    'auth-endpoint': { type: 'string', default: process.env.CLARION_AUTH_ENDPOINT ?? '' },
    cluster: { type: 'string', default: 'clarion' },
  },
});
const port = Number(args.port);
const started = Date.now();

function emit(obj) {
  // t: ms since start; at: wall-clock ms with sub-ms precision, for latency measurements.
  const at = performance.timeOrigin + performance.now();
  process.stdout.write(JSON.stringify({ ...obj, t: Date.now() - started, at }) + '\n');
}

function describe(err) {
  if (err == null) return null;
  if (typeof err === 'string') return err;
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  try {
    return JSON.parse(JSON.stringify(err));
  } catch {
    return String(err);
  }
}

Pusher.logToConsole = false;
Pusher.log = (msg) => process.stderr.write(`[pusher-js] ${msg}\n`);

// Options shared by the pusher-js and laravel-echo clients: WebSocket only, plain ws, no stats.
function pusherOptions() {
  return {
    cluster: args.cluster,
    wsHost: args.host,
    wsPort: port,
    wssPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    enableStats: false,
  };
}

let pusher = null; // the pusher-js instance (the one Echo drives, for echo_connect)
let echo = null;
const bound = new Set(); // channels whose events are already reported

function watchConnection(raw) {
  const conn = pusher.connection;
  conn.bind('state_change', ({ previous, current }) => emit({ type: 'state', previous, current }));
  conn.bind('connected', () => emit({ type: 'connected', socket_id: conn.socket_id }));
  conn.bind('error', (err) => emit({ type: 'connection_error', error: describe(err?.error ?? err) }));
  if (raw) {
    conn.bind('message', (m) => emit({ type: 'message', event: m.event, channel: m.channel ?? null, data: m.data }));
  }
}

// Report everything a pusher-js Channel emits: its lifecycle events and every channel event.
function watchChannel(channel) {
  if (bound.has(channel.name)) return;
  bound.add(channel.name);
  channel.bind_global((event, data) => {
    if (event === 'pusher:subscription_succeeded') {
      emit({ type: 'subscription_succeeded', channel: channel.name });
    } else if (event === 'pusher:subscription_error') {
      emit({ type: 'subscription_error', channel: channel.name, data: describe(data) });
    } else if (event === 'pusher:subscription_count') {
      emit({ type: 'subscription_count', channel: channel.name, data });
    } else {
      emit({ type: 'event', channel: channel.name, event, data, via: 'global' });
    }
  });
}

function requirePusher() {
  if (!pusher) throw new Error('not connected: send connect (or echo_connect) first');
  return pusher;
}

const echoChannels = new Map(); // full channel name -> Echo channel with callbacks attached

function echoChannel(kind, name) {
  if (!echo) throw new Error('laravel-echo not connected: send echo_connect first');
  if (!['channel', 'private', 'encryptedPrivate'].includes(kind)) throw new Error(`unknown Echo channel kind ${kind}`);
  const ch = echo[kind](name);
  if (!echoChannels.has(ch.name)) {
    echoChannels.set(ch.name, ch);
    ch.subscribed(() => emit({ type: 'subscription_succeeded', channel: ch.name, client: 'echo' }));
    ch.error((err) => emit({ type: 'subscription_error', channel: ch.name, data: describe(err), client: 'echo' }));
  }
  return ch;
}

const commands = {
  connect(cmd) {
    if (pusher) throw new Error('already connected');
    pusher = new Pusher(args.key, {
      ...pusherOptions(),
      channelAuthorization: { endpoint: args['auth-endpoint'], transport: 'ajax' },
    });
    watchConnection(cmd.raw);
  },
  subscribe(cmd) {
    watchChannel(requirePusher().subscribe(cmd.channel));
  },
  bind(cmd) {
    const channel = requirePusher().channel(cmd.channel);
    if (!channel) throw new Error(`not subscribed to ${cmd.channel}`);
    channel.bind(cmd.event, (data) => emit({ type: 'event', channel: cmd.channel, event: cmd.event, data, via: 'bind' }));
  },
  unsubscribe(cmd) {
    requirePusher().unsubscribe(cmd.channel);
    bound.delete(cmd.channel);
  },
  trigger(cmd) {
    const channel = requirePusher().channel(cmd.channel);
    if (!channel) throw new Error(`not subscribed to ${cmd.channel}`);
    return { sent: channel.trigger(cmd.event, cmd.data) };
  },
  disconnect() {
    requirePusher().disconnect();
  },
  state() {
    const p = requirePusher();
    return { state: p.connection.state, socket_id: p.connection.socket_id ?? null };
  },
  echo_connect(cmd) {
    if (pusher) throw new Error('already connected');
    echo = new Echo({
      ...pusherOptions(),
      broadcaster: 'pusher',
      key: args.key,
      authEndpoint: args['auth-endpoint'],
      Pusher,
      withoutInterceptors: true,
      ...(cmd.namespace !== undefined ? { namespace: cmd.namespace } : {}),
    });
    pusher = echo.connector.pusher;
    watchConnection(cmd.raw);
  },
  echo_listen(cmd) {
    const ch = echoChannel(cmd.kind ?? 'channel', cmd.channel);
    ch.listen(cmd.event, (data) =>
      emit({ type: 'event', channel: ch.name, event: cmd.event, data, via: 'echo', client: 'echo' }),
    );
    return { channel: ch.name };
  },
  echo_leave(cmd) {
    if (!echo) throw new Error('laravel-echo not connected');
    echo.leave(cmd.channel);
  },
  exit() {
    if (pusher) pusher.disconnect();
    // Let the ack and the close frame go out before leaving.
    setTimeout(() => process.exit(0), 50);
  },
};

const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    emit({ type: 'ack', cmd: null, id: null, ok: false, error: `bad JSON: ${err.message}` });
    return;
  }
  const handler = commands[cmd.cmd];
  try {
    if (!handler) throw new Error(`unknown command ${cmd.cmd}`);
    const result = handler(cmd) ?? {};
    emit({ type: 'ack', cmd: cmd.cmd, id: cmd.id ?? null, ok: true, ...result });
  } catch (err) {
    emit({ type: 'ack', cmd: cmd.cmd, id: cmd.id ?? null, ok: false, error: describe(err) });
  }
});
rl.on('close', () => {
  if (pusher) pusher.disconnect();
  setTimeout(() => process.exit(0), 50);
});

process.on('uncaughtException', (err) => {
  emit({ type: 'fatal', error: describe(err), stack: err?.stack ?? null });
});
process.on('unhandledRejection', (err) => {
  emit({ type: 'fatal', error: describe(err), stack: err?.stack ?? null });
});

emit({ type: 'ready', pusher_js: PUSHER_JS_VERSION, laravel_echo: ECHO_VERSION, host: args.host, port, key: args.key });
