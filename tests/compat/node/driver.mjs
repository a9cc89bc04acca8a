// Drives one real Pusher client (pusher-js, or laravel-echo on top of it) for the Python tests.
//
//   node driver.mjs --host 127.0.0.1 --port 6001 --key KEY --auth-endpoint http://127.0.0.1:PORT/auth
//                   [--user-auth-endpoint http://127.0.0.1:PORT/user-auth]
//
// Every option can also come from the environment (CLARION_HOST, CLARION_PORT, CLARION_APP_KEY,
// CLARION_AUTH_ENDPOINT, CLARION_USER_AUTH_ENDPOINT). The user-auth endpoint defaults to
// "user-auth" next to the auth endpoint. Commands arrive as JSON lines on stdin; observations leave
// as JSON lines on stdout, one write per line. Library logs and driver diagnostics go to stderr.
//
// Commands ({"cmd": ..., "id": optional, echoed in the "ack"}):
//   pusher-js   connect {raw?, wire?, user?, auth_params?, auth_headers?, auth_cookie?}
//               subscribe {channel}     bind {channel, event}     unsubscribe {channel}
//               trigger {channel, event, data}      trigger_burst {channel, event, count}
//               send_event {event, data, channel?}  (a raw frame, past pusher-js' own checks)
//               presence_state {channel}            disconnect      reconnect (pusher.connect())
//               state
//   sign-in     signin     user_bind {event}     watchlist_bind {event}     user_state
//   laravel-echo  echo_connect {raw?, wire?, namespace?, user?, auth_params?}
//                 echo_listen {kind: channel|private|encryptedPrivate|join, channel, event}
//                 echo_join {channel}                 (with here(), joining() and leaving())
//                 echo_whisper {kind, channel, event, data}
//                 echo_listen_whisper {kind, channel, event}
//                 echo_leave {channel}
//   both        exit
//
// "user" is {id, info?, watchlist?} and "auth_params" any extra fields: both go as form fields to
// the auth and user-auth endpoints (user_id, user_info and watchlist as JSON), which is how the
// test app back end knows who this client is. A real app back end knows it from its own
// authentication instead: "auth_headers" ({name: value}, e.g. a bearer token or a CSRF token)
// go with every auth request as pusher-js' `headers` option, and "auth_cookie" (a Cookie header,
// e.g. a Django session) too. A browser sends its cookies by itself; Node's XMLHttpRequest
// polyfill refuses to, so with a cookie the auth requests go through pusher-js' customHandler
// with fetch, posting the same form pusher-js would.
//
// "wire": true also reports every frame as it came off the WebSocket, before pusher-js' parsing
// keeps only event, channel, data and user_id: after each "connected", the driver binds the
// transport's own 'message' event (pusher.connection.connection.transport) and emits "raw". The
// frame's "data" is left as sent (a JSON string for channel events). pusher-js handles each frame
// first, so a frame's "raw" comes after whatever the app's callbacks saw of it.
//
// Observations ({"type": ..., "t": ms since start}):
//   ready, ack {cmd, id, ok, error?}, state {previous, current}, connected {socket_id},
//   connection_error {error}, subscription_succeeded {channel, members? (presence), client?},
//   subscription_error {channel, data}, subscription_count {channel, data, count},
//   member_added / member_removed {channel, member, members}, cache_miss {channel, data},
//   event {channel, event, data, via, metadata? (bind only)},
//   signin_success {user_data, channel}, signin_done {signed_in, user_data}, signin_error {data},
//   user_event {event, data, via}, watchlist_event {event, user_ids, via},
//   echo_here {channel, users}, echo_joining / echo_leaving {channel, user},
//   whisper {channel, event, data, metadata},
//   message {event, channel, data, user_id} (every frame received, only with raw: true),
//   raw {frame} (every frame received after the handshake, whole, only with wire: true), fatal {error}
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
    'user-auth-endpoint': { type: 'string', default: process.env.CLARION_USER_AUTH_ENDPOINT ?? '' },
    cluster: { type: 'string', default: 'clarion' },
  },
});
const port = Number(args.port);
const userAuthEndpoint =
  args['user-auth-endpoint'] || (args['auth-endpoint'] ? new URL('user-auth', args['auth-endpoint']).href : '');
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

// Form fields for the auth and user-auth endpoints: who this client is, as the app back end
// would know from its session.
function authParams(cmd) {
  const params = { ...(cmd.auth_params ?? {}) };
  if (cmd.user) {
    params.user_id = String(cmd.user.id);
    if (cmd.user.info !== undefined) params.user_info = JSON.stringify(cmd.user.info);
    if (cmd.user.watchlist !== undefined) params.watchlist = JSON.stringify(cmd.user.watchlist);
  }
  return params;
}

let pusher = null; // the pusher-js instance (the one Echo drives, for echo_connect)
let echo = null;
const bound = new Set(); // channels whose events are already reported
const signinPromises = new Set(); // signinDonePromise instances already reported

function describeMembers(members) {
  const list = [];
  members.each((member) => list.push(member));
  list.sort((a, b) => String(a.id).localeCompare(String(b.id)));
  return { count: members.count, my_id: members.myID, me: members.me, list };
}

function watchConnection(raw, wire) {
  const conn = pusher.connection;
  conn.bind('state_change', ({ previous, current }) => emit({ type: 'state', previous, current }));
  conn.bind('connected', () => emit({ type: 'connected', socket_id: conn.socket_id }));
  if (wire) conn.bind('connected', () => watchWire(conn));
  conn.bind('error', (err) => emit({ type: 'connection_error', error: describe(err?.error ?? err) }));
  // pusher-js' UserFacade handled pusher:signin_success before this (it bound first): by now it
  // has parsed user_data and asked for the #server-to-user- channel.
  conn.bind('message', (m) => {
    if (m.event === 'pusher:signin_success') reportSignin();
  });
  if (raw) {
    conn.bind('message', (m) =>
      emit({ type: 'message', event: m.event, channel: m.channel ?? null, data: m.data, user_id: m.user_id ?? null }),
    );
  }
  // Everything the user and watchlist facades emit, as an app binding them globally would see it.
  pusher.user.bind_global((event, data) => {
    if (event === 'pusher:signin_error') emit({ type: 'signin_error', data: describe(data) });
    else emit({ type: 'user_event', event, data, via: 'global' });
  });
  pusher.user.watchlist.bind_global((event, data) =>
    emit({ type: 'watchlist_event', event, user_ids: data?.user_ids ?? null, via: 'global' }),
  );
}

// Each connection has its own transport: bound again after every (re)connect. pusher-js sends its
// subscribes on 'connected' too, but their answers arrive in a later turn, after this bind.
function watchWire(conn) {
  const transport = conn.connection?.transport;
  if (!transport) {
    emit({ type: 'fatal', error: 'wire: no transport on the connected connection' });
    return;
  }
  transport.bind('message', (messageEvent) => {
    let frame;
    try {
      frame = JSON.parse(messageEvent.data);
    } catch {
      frame = { unparsed: String(messageEvent.data) };
    }
    emit({ type: 'raw', frame });
  });
}

function reportSignin() {
  const user = pusher.user;
  const channel = user.serverToUserChannel;
  emit({ type: 'signin_success', user_data: user.user_data, channel: channel?.name ?? null });
  if (channel) {
    channel.bind('pusher:subscription_succeeded', () =>
      emit({ type: 'subscription_succeeded', channel: channel.name, client: 'user' }),
    );
    channel.bind('pusher:subscription_error', (data) =>
      emit({ type: 'subscription_error', channel: channel.name, data: describe(data), client: 'user' }),
    );
  }
}

function watchSigninDone() {
  const user = pusher.user;
  const promise = user.signinDonePromise;
  if (!promise || signinPromises.has(promise)) return;
  signinPromises.add(promise);
  // Resolved when the sign-in is over, signed in or not; never when the server only answers
  // with pusher:error.
  promise.then(() => emit({ type: 'signin_done', signed_in: user.user_data != null, user_data: user.user_data }));
}

// Report everything a pusher-js Channel emits: its lifecycle events and every channel event.
function watchChannel(channel) {
  if (bound.has(channel.name)) return;
  bound.add(channel.name);
  // Global callbacks get (event, data) only: pusher-js gives the metadata ({user_id} on presence
  // client events) to bind() callbacks alone.
  channel.bind_global((event, data) => {
    const name = channel.name;
    if (event === 'pusher:subscription_succeeded') {
      const presence = channel.members ? { members: describeMembers(channel.members) } : {};
      emit({ type: 'subscription_succeeded', channel: name, ...presence });
    } else if (event === 'pusher:subscription_error') {
      emit({ type: 'subscription_error', channel: name, data: describe(data) });
    } else if (event === 'pusher:subscription_count') {
      emit({ type: 'subscription_count', channel: name, data, count: channel.subscriptionCount ?? null });
    } else if (event === 'pusher:member_added' || event === 'pusher:member_removed') {
      const type = event.slice('pusher:'.length);
      emit({ type, channel: name, member: data, members: describeMembers(channel.members) });
    } else if (event === 'pusher:cache_miss') {
      emit({ type: 'cache_miss', channel: name, data: data ?? null });
    } else {
      emit({ type: 'event', channel: name, event, data, via: 'global' });
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
  if (!['channel', 'private', 'encryptedPrivate', 'join'].includes(kind)) {
    throw new Error(`unknown Echo channel kind ${kind}`);
  }
  const ch = echo[kind](name);
  if (!echoChannels.has(ch.name)) {
    echoChannels.set(ch.name, ch);
    ch.subscribed(() => emit({ type: 'subscription_succeeded', channel: ch.name, client: 'echo' }));
    ch.error((err) => emit({ type: 'subscription_error', channel: ch.name, data: describe(err), client: 'echo' }));
  }
  return ch;
}

// pusher-js' auth request, made with fetch so a Cookie header can go with it.
function fetchAuthorizer(endpoint, params, headers, cookie) {
  return (request, callback) => {
    const form = new URLSearchParams({ socket_id: request.socketId, ...params });
    if (request.channelName) form.set('channel_name', request.channelName);
    fetch(endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...headers, Cookie: cookie },
      body: form.toString(),
    })
      .then(async (res) => {
        const text = await res.text();
        if (res.status !== 200) callback(new Error(`auth status ${res.status}: ${text}`), null);
        else callback(null, JSON.parse(text));
      })
      .catch((err) => callback(err, null));
  };
}

function authOptions(endpoint, params, cmd) {
  const headers = cmd.auth_headers ?? {};
  if (cmd.auth_cookie) {
    return { customHandler: fetchAuthorizer(endpoint, params, headers, cmd.auth_cookie) };
  }
  return { endpoint, transport: 'ajax', params, headers };
}

const commands = {
  connect(cmd) {
    if (pusher) throw new Error('already connected');
    const params = authParams(cmd);
    pusher = new Pusher(args.key, {
      ...pusherOptions(),
      channelAuthorization: authOptions(args['auth-endpoint'], params, cmd),
      userAuthentication: authOptions(userAuthEndpoint, params, cmd),
    });
    watchConnection(cmd.raw, cmd.wire);
  },
  subscribe(cmd) {
    watchChannel(requirePusher().subscribe(cmd.channel));
  },
  bind(cmd) {
    const channel = requirePusher().channel(cmd.channel);
    if (!channel) throw new Error(`not subscribed to ${cmd.channel}`);
    channel.bind(cmd.event, (data, metadata) =>
      emit({ type: 'event', channel: cmd.channel, event: cmd.event, data, metadata: metadata ?? null, via: 'bind' }),
    );
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
  trigger_burst(cmd) {
    // Back to back in one turn of the event loop: data {n: 0..count-1}.
    const channel = requirePusher().channel(cmd.channel);
    if (!channel) throw new Error(`not subscribed to ${cmd.channel}`);
    const sent = [];
    for (let n = 0; n < cmd.count; n++) sent.push(channel.trigger(cmd.event, { n }));
    return { sent };
  },
  send_event(cmd) {
    return { sent: requirePusher().send_event(cmd.event, cmd.data, cmd.channel) };
  },
  presence_state(cmd) {
    const channel = requirePusher().channel(cmd.channel);
    if (!channel || !channel.members) throw new Error(`no presence channel ${cmd.channel}`);
    return { subscribed: channel.subscribed, members: describeMembers(channel.members) };
  },
  signin() {
    requirePusher().signin();
    watchSigninDone();
  },
  user_bind(cmd) {
    requirePusher().user.bind(cmd.event, (data) => emit({ type: 'user_event', event: cmd.event, data, via: 'bind' }));
  },
  watchlist_bind(cmd) {
    requirePusher().user.watchlist.bind(cmd.event, (data) =>
      emit({ type: 'watchlist_event', event: cmd.event, user_ids: data?.user_ids ?? null, via: 'bind' }),
    );
  },
  user_state() {
    const user = requirePusher().user;
    const channel = user.serverToUserChannel;
    return {
      signin_requested: user.signin_requested,
      user_data: user.user_data,
      server_to_user: channel ? { name: channel.name, subscribed: channel.subscribed } : null,
    };
  },
  disconnect() {
    requirePusher().disconnect();
  },
  reconnect() {
    // The same Pusher instance: its channels are subscribed again once connected.
    requirePusher().connect();
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
      auth: { headers: {}, params: authParams(cmd) },
      userAuthentication: { endpoint: userAuthEndpoint, headers: {}, params: authParams(cmd) },
      Pusher,
      withoutInterceptors: true,
      ...(cmd.namespace !== undefined ? { namespace: cmd.namespace } : {}),
    });
    pusher = echo.connector.pusher;
    watchConnection(cmd.raw, cmd.wire);
  },
  echo_listen(cmd) {
    const ch = echoChannel(cmd.kind ?? 'channel', cmd.channel);
    ch.listen(cmd.event, (data) =>
      emit({ type: 'event', channel: ch.name, event: cmd.event, data, via: 'echo', client: 'echo' }),
    );
    return { channel: ch.name };
  },
  echo_join(cmd) {
    const ch = echoChannel('join', cmd.channel);
    ch.here((users) => emit({ type: 'echo_here', channel: ch.name, users, client: 'echo' }))
      .joining((user) => emit({ type: 'echo_joining', channel: ch.name, user, client: 'echo' }))
      .leaving((user) => emit({ type: 'echo_leaving', channel: ch.name, user, client: 'echo' }));
    return { channel: ch.name };
  },
  echo_whisper(cmd) {
    echoChannel(cmd.kind ?? 'private', cmd.channel).whisper(cmd.event, cmd.data);
  },
  echo_listen_whisper(cmd) {
    const ch = echoChannel(cmd.kind ?? 'private', cmd.channel);
    ch.listenForWhisper(cmd.event, (data, metadata) =>
      emit({ type: 'whisper', channel: ch.name, event: cmd.event, data, metadata: metadata ?? null, client: 'echo' }),
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

emit({
  type: 'ready',
  pusher_js: PUSHER_JS_VERSION,
  laravel_echo: ECHO_VERSION,
  host: args.host,
  port,
  key: args.key,
  user_auth_endpoint: userAuthEndpoint,
});
