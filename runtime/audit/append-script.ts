import { createHash } from 'node:crypto';

/*
 * Compare-and-set append of a batch, with a waiting line for fairness.
 *
 * KEYS: stream, head, line (sorted set of waiting appends by arrival), alive (hash: waiter -> expiry).
 * ARGV: genesis hash, expected seq, expected hash, token (one per batch), waiter ttl ms, n, turn
 * channel, then per entry: field count, stream id, fields...; then the new head's seq and hash.
 *
 * Writers race optimistically while nobody waits. A writer that loses the race joins the line; while
 * the line is not empty only its first member may append, so under contention appends go first come,
 * first served and nobody starves. Whoever appends (or finds a dead first waiter) publishes
 * "<token> <seq> <hash>" on the turn channel for the waiter now first, which then appends at once on
 * that head. A waiter that stops asking (a crashed process) drops out after ttl.
 *
 * Returns {1} when appended, else {0, seq, hash, ahead}: the current head and how many wait before
 * the caller (0: retry at once).
 */
export const APPEND_LUA = `
local seq = redis.call('HGET', KEYS[2], 'seq')
local hash = redis.call('HGET', KEYS[2], 'hash')
if not seq then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.error_reply('PALISADE_AUDIT the audit head ' .. KEYS[2] .. ' is missing but the stream exists: refusing to start a second chain (run palisade audit verify)')
  end
  seq = '0'
  hash = ARGV[1]
elseif not hash then
  return redis.error_reply('PALISADE_AUDIT the audit head ' .. KEYS[2] .. ' has no hash (run palisade audit verify)')
end
local token = ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = now + tonumber(ARGV[5])
local first = false
local purged = false
while true do
  local f = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not f then break end
  if f == token or tonumber(redis.call('HGET', KEYS[4], f) or '0') > now then
    first = f
    break
  end
  redis.call('ZREM', KEYS[3], f)
  redis.call('HDEL', KEYS[4], f)
  purged = true
end
if purged and first and first ~= token then redis.call('PUBLISH', ARGV[7], first .. ' ' .. seq .. ' ' .. hash) end
local function wait()
  if not redis.call('ZSCORE', KEYS[3], token) then
    redis.call('ZADD', KEYS[3], tonumber(t[1]) * 1000000 + tonumber(t[2]), token)
  end
  redis.call('HSET', KEYS[4], token, expires)
  return {0, seq, hash, redis.call('ZRANK', KEYS[3], token)}
end
if first and first ~= token then return wait() end
if seq ~= ARGV[2] or hash ~= ARGV[3] then return wait() end
local i = 8
for e = 1, tonumber(ARGV[6]) do
  local nf = tonumber(ARGV[i])
  redis.call('XADD', KEYS[1], ARGV[i + 1], unpack(ARGV, i + 2, i + 1 + nf))
  i = i + 2 + nf
end
redis.call('HSET', KEYS[2], 'seq', ARGV[#ARGV - 1], 'hash', ARGV[#ARGV])
if first then
  redis.call('ZREM', KEYS[3], token)
  redis.call('HDEL', KEYS[4], token)
  local nxt = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if nxt then redis.call('PUBLISH', ARGV[7], nxt .. ' ' .. ARGV[#ARGV - 1] .. ' ' .. ARGV[#ARGV]) end
end
return {1}`;
export const APPEND_SHA = createHash('sha1').update(APPEND_LUA).digest('hex');
