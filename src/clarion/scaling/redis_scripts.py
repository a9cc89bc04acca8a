"""The Lua scripts of the Redis twin. Each change to shared state is one script, so a crash between
two writes cannot leave counts half-done.

Each script may run twice: redis-py sends a command again when its connection broke, and the first
attempt may have been applied before the break. So every script is idempotent, and a repeat
answers as the first attempt did: a publish claims a unique publish id with ``SET NX PX`` first;
counts set this node's share to an absolute value; joins, leaves and online changes are guarded by
this node's share and told whether the node held the entry before (``held``), which tells a repeat
of the node's own change (answered as the first was) from a genuine no-op.
"""

from __future__ import annotations

PUBLISH = """
-- KEYS: claim. ARGV: bus, message, claim ttl ms. Returns 1 when published, 0 when the claim was
-- already taken (a repeated publish: nothing is done again).
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then return 0 end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

PUBLISH_KEPT = """
-- KEYS: claim, position hash (e = epoch, s = serial), history stream.
-- ARGV: bus, app, channel, frame, exclude, size, ttl ms, position ttl ms, epoch if new, publish id,
-- claim ttl ms, the API's receipt time (s, '' for none).
-- Returns the serial, or 0 when the claim was already taken (nothing done again).
-- The claim, the next serial, the stored entry and the bus message happen together, so every node
-- sees events in serial order, history never misses one that was delivered, and a repeat of the
-- script neither delivers nor stores the event twice.
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[11]) then return 0 end
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[9]
  redis.call('DEL', KEYS[3])  -- entries of a forgotten epoch would clash with the new serials
  redis.call('HSET', KEYS[2], 'e', epoch, 's', 0)
end
local serial = redis.call('HINCRBY', KEYS[2], 's', 1)
redis.call('PEXPIRE', KEYS[2], ARGV[8])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local frame = string.sub(ARGV[4], 1, -2) .. ',"epoch":"' .. epoch .. '","serial":' .. serial .. '}'
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '0-' .. serial, 'f', frame, 't', now)
redis.call('PEXPIRE', KEYS[3], ARGV[7])
redis.call('PUBLISH', ARGV[1], cjson.encode({'e', ARGV[2], ARGV[3], frame, ARGV[5], serial, epoch, ARGV[10], ARGV[12]}))
return serial
"""

REMEMBER_UNLESS_CLAIMED = """
-- KEYS: cache, the publish's idempotency claim. ARGV: value, ttl ms. A publish retried with its
-- Idempotency-Key finds its claim taken: the cache keeps whatever was published since.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

HISTORY = """
-- KEYS: position hash, history stream. ARGV: after ('' for the newest), limit, max age ms.
-- Returns {epoch or false, serial, now ms, entries}.
local pos = redis.call('HMGET', KEYS[1], 'e', 's')
if not pos[1] then return {false, 0, 0, {}} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local entries
if ARGV[1] == '' then
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
else
  entries = redis.call('XRANGE', KEYS[2], '0-' .. (tonumber(ARGV[1]) + 1), '+', 'COUNT', ARGV[2])
end
return {pos[1], tonumber(pos[2]), now, entries}
"""

JOIN = """
-- KEYS: members (user -> nodes holding), infos (user -> info), node set;
-- ARGV: user, info, limit, entry, held. Returns -1 (full), 0 (held already) or the node count.
if redis.call('SISMEMBER', KEYS[3], ARGV[4]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  if ARGV[5] == '1' then return 0 end
  -- The node did not hold the user, yet its entry is there: its own first attempt of this join
  -- was applied and the answer lost. Answer as that attempt did.
  return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '1')
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  local limit = tonumber(ARGV[3])
  if limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then return -1 end
end
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
"""

LEAVE = """
-- KEYS: members, infos, node set; ARGV: user, entry, held. Returns 1 when the user left
-- cluster-wide, 0 when other nodes still hold them, -1 when this node did not hold them.
if redis.call('SREM', KEYS[3], ARGV[2]) == 0 then
  if ARGV[3] ~= '1' then return -1 end
  -- Held, yet the entry is gone: the first attempt of this leave was applied. Answer as it did.
  if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 1 end
  return 0
end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

ONLINE = """
-- KEYS: online (user -> nodes), node set; ARGV: user, entry, delta (1 or -1), held.
-- Returns the cluster count after the change, or -1 when there was nothing to change.
local member = redis.call('SISMEMBER', KEYS[2], ARGV[2])
if tonumber(ARGV[3]) > 0 then
  if member == 1 then
    if ARGV[4] == '1' then return -1 end
    return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '1')  -- a repeat of this very change
  end
  redis.call('SADD', KEYS[2], ARGV[2])
else
  if member == 0 then
    if ARGV[4] ~= '1' then return -1 end
    return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')  -- a repeat of this very change
  end
  redis.call('SREM', KEYS[2], ARGV[2])
end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) return 0 end
return n
"""

COUNT = """
-- KEYS: counts (channel -> total), node counts (app\\x1fchannel -> this node's share);
-- ARGV: channel, entry, share. Sets this node's share (never below zero) and moves the total by
-- the difference, so a repeat changes nothing more. Returns the total.
local share = math.max(tonumber(ARGV[3]), 0)
local before = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if share > 0 then
  redis.call('HSET', KEYS[2], ARGV[2], share)
else
  redis.call('HDEL', KEYS[2], ARGV[2])
end
local total
if share ~= before then
  total = redis.call('HINCRBY', KEYS[1], ARGV[1], share - before)
else
  total = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
end
if total <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) return 0 end
return total
"""

RESTORE = """
-- Make Redis hold exactly this node's share. KEYS: node presence set, node users set, node counts;
-- ARGV: prefix, JSON {members: [[app, channel, user, info]], users: [[app, user]], counts: [[app, channel, n]]}.
local prefix, held = ARGV[1], cjson.decode(ARGV[2])
local SEP = '\\31'  -- Lua's decimal escape: the unit separator, as SEP in Python
local function k(app, what, name)
  if name then return prefix .. ':' .. app .. ':' .. what .. ':' .. name end
  return prefix .. ':' .. app .. ':' .. what
end
local function split(entry)
  local parts = {}
  for part in string.gmatch(entry, '([^' .. SEP .. ']+)') do table.insert(parts, part) end
  return parts
end
-- What the cluster may not know: {added, removed, online, offline}. added and online are the
-- members and users that only this node holds after the write-back (a state, so a repeat of the
-- script answers the same); removed and offline are what this run took away.
local diff = {added = {}, removed = {}, online = {}, offline = {}}
-- presence
local want = {}
for _, m in ipairs(held.members) do want[m[1] .. SEP .. m[2] .. SEP .. m[3]] = m end
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not want[entry] then
    local p = split(entry)
    redis.call('SREM', KEYS[1], entry)
    if redis.call('HINCRBY', k(p[1], 'members', p[2]), p[3], -1) <= 0 then
      redis.call('HDEL', k(p[1], 'members', p[2]), p[3])
      redis.call('HDEL', k(p[1], 'infos', p[2]), p[3])
      table.insert(diff.removed, p)
    end
  end
end
for entry, m in pairs(want) do
  redis.call('HSET', k(m[1], 'infos', m[2]), m[3], m[4])
  local n
  if redis.call('SADD', KEYS[1], entry) == 1 then
    n = redis.call('HINCRBY', k(m[1], 'members', m[2]), m[3], 1)
  else
    n = tonumber(redis.call('HGET', k(m[1], 'members', m[2]), m[3]) or '0')
  end
  if n == 1 then table.insert(diff.added, m) end
end
-- online users
local wantu = {}
for _, u in ipairs(held.users) do wantu[u[1] .. SEP .. u[2]] = u end
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if not wantu[entry] then
    local p = split(entry)
    redis.call('SREM', KEYS[2], entry)
    if redis.call('HINCRBY', k(p[1], 'online'), p[2], -1) <= 0 then
      redis.call('HDEL', k(p[1], 'online'), p[2])
      table.insert(diff.offline, p)
    end
  end
end
for entry, u in pairs(wantu) do
  local n
  if redis.call('SADD', KEYS[2], entry) == 1 then
    n = redis.call('HINCRBY', k(u[1], 'online'), u[2], 1)
  else
    n = tonumber(redis.call('HGET', k(u[1], 'online'), u[2]) or '0')
  end
  if n == 1 then table.insert(diff.online, u) end
end
-- subscription counts
local wantc = {}
for _, c in ipairs(held.counts) do wantc[c[1] .. SEP .. c[2]] = c end
local stored = redis.call('HGETALL', KEYS[3])
for i = 1, #stored, 2 do
  if not wantc[stored[i]] then wantc[stored[i]] = {split(stored[i])[1], split(stored[i])[2], 0} end
end
for entry, c in pairs(wantc) do
  local delta = c[3] - tonumber(redis.call('HGET', KEYS[3], entry) or '0')
  if delta ~= 0 then
    if c[3] > 0 then redis.call('HSET', KEYS[3], entry, c[3]) else redis.call('HDEL', KEYS[3], entry) end
    if redis.call('HINCRBY', k(c[1], 'counts'), c[2], delta) <= 0 then redis.call('HDEL', k(c[1], 'counts'), c[2]) end
  end
end
return cjson.encode(diff)
"""

BEAT = """
-- KEYS: nodes (zset node -> last beat ms), this node's beat token; ARGV: node, ttl ms, token.
-- Returns {1 if this node was missing (new, reaped, or Redis restarted), dead node ids...}. A repeat
-- of the beat that found the node missing finds its token and answers 1 again.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local added = redis.call('ZADD', KEYS[1], now, ARGV[1])
if added == 1 then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
elseif redis.call('GET', KEYS[2]) == ARGV[3] then
  added = 1
end
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
table.insert(dead, 1, added)
return dead
"""
