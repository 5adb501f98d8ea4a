import { STATUS_CAUTION } from './store.js';

/**
 * Lua scripts of the Redis store. Each touches only keys of one user (one hash tag, one Cluster
 * slot) and runs atomically; ioredis registers them once and calls them by EVALSHA.
 *
 * Trust entries are "grantedBy|at|expiresAt[|browser|os]"; sightings "firstSeen|lastSeen|count".
 */

const LIVE = `
local function field(v, n)
  local i = 0
  for part in string.gmatch(v .. '|', '([^|]*)|') do
    i = i + 1
    if i == n then return part end
  end
  return nil
end
local function live(v, now)
  if not v then return 0 end
  local exp = tonumber(field(v, 3))
  if exp and exp > now then return 1 end
  return 0
end
-- Evicts the entries with the smallest value of field n until the hash holds at most cap.
local function cap(key, cap, n)
  local size = redis.call('HLEN', key)
  if size <= cap then return end
  local all = redis.call('HGETALL', key)
  local entries = {}
  for i = 1, #all, 2 do entries[#entries + 1] = { all[i], tonumber(field(all[i + 1], n)) or 0 } end
  table.sort(entries, function(a, b) return a[2] < b[2] end)
  for i = 1, size - cap do redis.call('HDEL', key, entries[i][1]) end
end
-- Members of a window newer than since: all of them, and those of one device ("device|..." members).
local function ofDevice(key, device, since)
  local all = redis.call('ZRANGEBYSCORE', key, '(' .. since, '+inf')
  local p, mine = device .. '|', 0
  for i = 1, #all do if string.sub(all[i], 1, #p) == p then mine = mine + 1 end end
  return #all, mine
end
`;

/**
 * KEYS: seen, dtrust, ntrust, place, meta, decides, nets, declines, limit. One round trip for the
 * whole SKIP path, the per-user rate limit included: over the limit it returns { -1, pttl } and
 * records nothing.
 */
export const OBSERVE = `${LIVE}
local now = tonumber(ARGV[1])
local perMinute = tonumber(ARGV[13])
if ARGV[12] == '1' and perMinute and perMinute > 0 then
  -- The window runs on the caller's clock (ARGV[1]), as every other window here; the TTL only cleans up.
  local window = redis.call('HMGET', KEYS[9], 'r', 'n')
  local resetAt, spent = tonumber(window[1]) or 0, tonumber(window[2]) or 0
  if resetAt <= now then resetAt, spent = now + 60000, 0 end
  spent = spent + 1
  redis.call('HSET', KEYS[9], 'r', resetAt, 'n', spent)
  redis.call('PEXPIRE', KEYS[9], 120000)
  if spent > perMinute then return { -1, resetAt - now } end
end
local device = ARGV[2]
local historyMs = tonumber(ARGV[8])
local seen = redis.call('HGET', KEYS[1], device)
local first, count = '', 0
-- A sighting lapses HISTORY_TTL after it was last seen, on the caller's clock (the hash TTL only cleans up).
if seen and now - (tonumber(field(seen, 2)) or 0) > historyMs then seen = nil end
if seen then first = field(seen, 1); count = tonumber(field(seen, 3)) or 0 end
local dt = redis.call('HGET', KEYS[2], device)
local deviceKnown = live(dt, now)
local ua = ''
if deviceKnown == 1 then ua = (field(dt, 4) or '') .. '|' .. (field(dt, 5) or '') end
local verified = 0
local values = redis.call('HVALS', KEYS[2])
for i = 1, #values do verified = verified + live(values[i], now) end
local nets = redis.call('HMGET', KEYS[3], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
local place = redis.call('GET', KEYS[4]) or ''
local lastVerified = redis.call('HGET', KEYS[5], 'lv') or ''

if ARGV[12] == '0' then
  -- Read only (rules explain): count the windows without touching anything.
  return { deviceKnown, count, seen and first or '', ua, live(nets[1], now), live(nets[2], now), live(nets[3], now), live(nets[4], now),
    verified, lastVerified, place, redis.call('ZCOUNT', KEYS[6], now - 3600000, '+inf'), redis.call('ZCOUNT', KEYS[7], now - 3600000, '+inf'),
    ofDevice(KEYS[8], device, now - 86400000) }
end
if first == '' then first = ARGV[1] end
redis.call('HSET', KEYS[1], device, first .. '|' .. ARGV[1] .. '|' .. (count + 1))
cap(KEYS[1], tonumber(ARGV[9]), 2)
redis.call('PEXPIRE', KEYS[1], historyMs)
redis.call('ZADD', KEYS[6], now, ARGV[10])
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - 3600000)
redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -(tonumber(ARGV[11]) + 1))
redis.call('PEXPIRE', KEYS[6], 3600000)
redis.call('ZADD', KEYS[7], now, ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - 3600000)
redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -(tonumber(ARGV[11]) + 1))
redis.call('PEXPIRE', KEYS[7], 3600000)
redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now - 86400000)
local declines, deviceDeclines = ofDevice(KEYS[8], device, now - 86400000)
return { deviceKnown, count, seen and first or '', ua, live(nets[1], now), live(nets[2], now), live(nets[3], now), live(nets[4], now),
  verified, lastVerified, place, redis.call('ZCARD', KEYS[6]), redis.call('ZCARD', KEYS[7]), declines, deviceDeclines }
`;

/** KEYS: dtrust, ntrust, place, meta, seen. ARGV: now, device, by, expiresAt, ua, ttl, capDevices, capNets, place, netkeys... */
export const TRUST = `${LIVE}
local now = ARGV[1]
local ttl = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '|' .. now .. '|' .. ARGV[4] .. '|' .. ARGV[5])
cap(KEYS[1], tonumber(ARGV[7]), 2)
for i = 10, #ARGV do redis.call('HSET', KEYS[2], ARGV[i], ARGV[3] .. '|' .. now .. '|' .. ARGV[4]) end
cap(KEYS[2], tonumber(ARGV[8]), 2)
if ARGV[9] ~= '' then redis.call('SET', KEYS[3], ARGV[9] .. '|' .. now .. '|' .. ARGV[3], 'PX', ttl) end
redis.call('HSET', KEYS[4], 'lv', now)
if redis.call('HEXISTS', KEYS[5], ARGV[2]) == 0 then redis.call('HSET', KEYS[5], ARGV[2], now .. '|' .. now .. '|0') end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
if redis.call('PTTL', KEYS[5]) < 0 then redis.call('PEXPIRE', KEYS[5], ttl) end
return 1
`;

/** KEYS: dtrust, ntrust, place. ARGV: grantedBy. */
export const REVOKE_GRANT = `
local by = ARGV[1] .. '|'
for k = 1, 2 do
  local all = redis.call('HGETALL', KEYS[k])
  for i = 1, #all, 2 do
    if string.sub(all[i + 1], 1, #by) == by then redis.call('HDEL', KEYS[k], all[i]) end
  end
end
local place = redis.call('GET', KEYS[3])
if place and string.sub(place, -#ARGV[1] - 1) == '|' .. ARGV[1] then redis.call('DEL', KEYS[3]) end
return 1
`;

/** KEYS: dtrust, seen. Returns the flat HGETALL of both. */
export const LIST_DEVICES = `
return { redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]) }
`;

/** KEYS: dtrust. ARGV: device, now. */
export const REVOKE_DEVICE = `${LIVE}
local v = redis.call('HGET', KEYS[1], ARGV[1])
if live(v, tonumber(ARGV[2])) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
`;

/**
 * KEYS: session. ARGV: session JSON, now, ttl, then the new binding's user, device, prefix, method,
 * purpose class. Writes unless another context holds a live pending binding (then 0): two hand-outs
 * of one Didit session racing from two sign-ins cannot both win.
 */
export const BIND_SESSION = `
local raw = redis.call('GET', KEYS[1])
if raw then
  local s = cjson.decode(raw)
  local prefix = (type(s.grant) == 'table' and s.grant.prefix) or ''
  local class = s.purposeClass or 'normal'
  local same = s.user == ARGV[4] and s.device == ARGV[5] and prefix == ARGV[6] and s.method == ARGV[7] and class == ARGV[8]
  if not same and s.status == 'pending' and tonumber(s.expiresAt) > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
`;

/**
 * KEYS: session. ARGV: status, diditStatus, eventTs, now. Newer events win, and on the same timestamp
 * the more cautious status (store.ts supersedes); returns the stored JSON.
 */
export const UPDATE_SESSION = `
local caution = cjson.decode('${JSON.stringify(STATUS_CAUTION)}')
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local s = cjson.decode(raw)
local ts = tonumber(ARGV[3])
local last = tonumber(s.lastEventTs)
if ts < last then return raw end
if ts == last and (caution[ARGV[1]] or 0) <= (caution[s.status] or 0) then return raw end
s.status = ARGV[1]
s.diditStatus = ARGV[2]
s.lastEventTs = ts
s.updatedAt = tonumber(ARGV[4])
local out = cjson.encode(s)
redis.call('SET', KEYS[1], out, 'KEEPTTL')
return out
`;

/** KEYS: index (zset of id → expiresAt), letter. ARGV: id, json, ttl, now, cap. Stored once per id, at most cap live. */
export const PUT_DEAD_LETTER = `
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
`;

/**
 * ID_HASH_KEY rotation: a user's families (in MIGRATION_FAMILIES order; the pending index is left
 * to lapse, see Migration) move from the previous pseudonym's keys to the current one's. A merge
 * never lets an older entry replace a newer one: trust entries by grant time, the place by time,
 * sightings field by field (first min, last max, count max), windows united, the rate-limit window
 * kept where it is. Every step is idempotent, so repeating it (two replicas, a retried call) adds nothing.
 */
const MIGRATION_LIB = `${LIVE}
local KINDS = { {'h', 'seen'}, {'h', 'trust'}, {'h', 'trust'}, {'s'}, {'h', 'max'}, {'z'}, {'z'}, {'z'}, {'h', 'keep'}, {'z'}, {'set'} }
local N = #KINDS
local function num(v, n) return tonumber(field(v, n)) or 0 end
-- R: previous pseudonym, current one, ... Each occurs at most once in a field or member.
local function ren(text, R)
  for i = 1, #R, 2 do
    local at = string.find(text, R[i], 1, true)
    if at then text = string.sub(text, 1, at - 1) .. R[i + 1] .. string.sub(text, at + #R[i]) end
  end
  return text
end
local function pick(rule, have, incoming)
  if not have then return incoming end
  if rule == 'keep' then return have end
  if rule == 'max' then if (tonumber(incoming) or 0) > (tonumber(have) or 0) then return incoming end return have end
  if rule == 'trust' then if num(incoming, 2) > num(have, 2) then return incoming end return have end
  return math.min(num(have, 1), num(incoming, 1)) .. '|' .. math.max(num(have, 2), num(incoming, 2)) .. '|' .. math.max(num(have, 3), num(incoming, 3))
end
local function putHash(key, rule, f, v)
  local have = redis.call('HGET', key, f)
  local win = pick(rule, have, v)
  if win ~= have then redis.call('HSET', key, f, win) end
end
local function putZ(key, m, score)
  local have = redis.call('ZSCORE', key, m)
  if not have or tonumber(have) < tonumber(score) then redis.call('ZADD', key, score, m) end
end
local function putPlace(key, v)
  local have = redis.call('GET', key)
  if not have or num(v, 5) > num(have, 5) then redis.call('SET', key, v, 'KEEPTTL') end
end
local function snapshot(keys)
  local dump, any = {}, false
  for i = 1, N do
    local key, kind = keys[i], KINDS[i][1]
    local ttl = redis.call('PTTL', key)
    if ttl ~= -2 then
      any = true
      local data
      if kind == 'h' then data = redis.call('HGETALL', key)
      elseif kind == 'z' then data = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
      elseif kind == 'set' then data = redis.call('SMEMBERS', key)
      else data = { redis.call('GET', key) } end
      dump[tostring(i)] = { d = data, t = ttl }
    end
  end
  if any then return dump end
  return nil
end
-- Renames the destination's own entries still under a previous pseudonym, then absorbs the dump.
local function merge(keys, dump, R, capDevices, capNets, recent)
  for i = 1, N do
    local key, kind, rule = keys[i], KINDS[i][1], KINDS[i][2]
    local before = redis.call('PTTL', key)
    if #R > 0 and before ~= -2 then
      if kind == 'h' then
        local all = redis.call('HGETALL', key)
        for j = 1, #all, 2 do
          local name = ren(all[j], R)
          if name ~= all[j] then redis.call('HDEL', key, all[j]); putHash(key, rule, name, all[j + 1]) end
        end
      elseif kind == 'z' then
        local all = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
        for j = 1, #all, 2 do
          local name = ren(all[j], R)
          if name ~= all[j] then redis.call('ZREM', key, all[j]); putZ(key, name, all[j + 1]) end
        end
      elseif kind == 's' then
        local v = redis.call('GET', key)
        if v and ren(v, R) ~= v then redis.call('SET', key, ren(v, R), 'KEEPTTL') end
      end
    end
    local entry = dump and dump[tostring(i)]
    local want = before
    if entry then
      local data = entry.d
      if kind == 'h' then for j = 1, #data, 2 do putHash(key, rule, ren(data[j], R), data[j + 1]) end
      elseif kind == 'z' then for j = 1, #data, 2 do putZ(key, ren(data[j], R), data[j + 1]) end
      elseif kind == 'set' then for j = 1, #data do redis.call('SADD', key, data[j]) end
      elseif data[1] then putPlace(key, ren(data[1], R)) end
      if entry.t > want then want = entry.t end
    end
    -- Every key keeps a TTL: the longer of the two (a key emptied and refilled above lost its own).
    local now = redis.call('PTTL', key)
    if now ~= -2 and want > 0 and (now == -1 or now < want) then redis.call('PEXPIRE', key, want) end
  end
  cap(keys[1], capDevices, 2)
  cap(keys[2], capDevices, 2)
  cap(keys[3], capNets, 2)
  for _, i in ipairs({ 6, 7, 8, 10 }) do redis.call('ZREMRANGEBYRANK', keys[i], 0, -(recent + 1)) end
end
-- Removes from the source exactly what the dump copied: an entry written there since stays for the next touch.
local function prune(keys, dump)
  for i = 1, N do
    local entry = dump[tostring(i)]
    if entry then
      local key, kind, data = keys[i], KINDS[i][1], entry.d
      if kind == 'h' then
        for j = 1, #data, 2 do if redis.call('HGET', key, data[j]) == data[j + 1] then redis.call('HDEL', key, data[j]) end end
      elseif kind == 'z' then
        for j = 1, #data, 2 do if redis.call('ZSCORE', key, data[j]) == data[j + 1] then redis.call('ZREM', key, data[j]) end end
      elseif kind == 'set' then
        for j = 1, #data do redis.call('SREM', key, data[j]) end
      elseif data[1] and redis.call('GET', key) == data[1] then redis.call('DEL', key) end
    end
  end
end
local function renames(from)
  local R = {}
  for i = from, #ARGV do R[#R + 1] = ARGV[i] end
  return R
end
`;

/** The families a migration moves, in the scripts' order. */
export const MIGRATION_FAMILIES = [
  'seen',
  'dtrust',
  'ntrust',
  'place',
  'meta',
  'decides',
  'nets',
  'declines',
  'limit',
  'opens',
  'sessions',
] as const;

/** One Redis (both users' keys on one node): KEYS previous 1..11, current 12..22. ARGV: capDevices, capNets, recent, renames... Atomic. */
export const MIGRATE = `${MIGRATION_LIB}
local from, to = {}, {}
for i = 1, N do from[i] = KEYS[i]; to[i] = KEYS[N + i] end
local dump = snapshot(from)
merge(to, dump, renames(4), tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if dump then prune(from, dump) end
return 1
`;

/** Cluster, step 1 on the previous user's slot: KEYS previous 1..11; the dump as JSON, '' when there is nothing. */
export const MIGRATION_SNAPSHOT = `${MIGRATION_LIB}
local dump = snapshot(KEYS)
if dump then return cjson.encode(dump) end
return ''
`;

/** Cluster, step 2 on the current user's slot: KEYS current 1..11. ARGV: capDevices, capNets, recent, dump JSON or '', renames... */
export const MIGRATION_MERGE = `${MIGRATION_LIB}
local dump = nil
if ARGV[4] ~= '' then dump = cjson.decode(ARGV[4]) end
merge(KEYS, dump, renames(5), tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return 1
`;

/** Cluster, step 3 on the previous user's slot: KEYS previous 1..11. ARGV: dump JSON. */
export const MIGRATION_PRUNE = `${MIGRATION_LIB}
prune(KEYS, cjson.decode(ARGV[1]))
return 1
`;
