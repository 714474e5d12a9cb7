-- kv increment within a module's budgets; keeps the key's expiry.
-- KEYS as in kv_set.lua.
-- ARGV[1] key, ARGV[2] delta, ARGV[3] ttl ms of a key it creates (0:
-- none; an existing key keeps its expiry), ARGV[4] now ms,
-- ARGV[5] most keys, ARGV[6] most bytes, ARGV[7] the bytes of an entry
-- without its value.
-- Returns {'ok', value as text} (text: Lua numbers are doubles), or
-- {'full'}, {'nan'}, {'overflow'}.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, 100)
for _, k in ipairs(expired) do
  redis.call('DECRBY', KEYS[4], tonumber(redis.call('HGET', KEYS[3], k) or '0'))
  redis.call('HDEL', KEYS[3], k)
  redis.call('ZREM', KEYS[2], k)
end
local exists = redis.call('EXISTS', KEYS[1]) == 1
local old = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if not exists and old == 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return {'full'}
end
local r = redis.pcall('INCRBY', KEYS[1], ARGV[2])
if type(r) == 'table' and r.err then
  if string.find(r.err, 'overflow') then
    return {'overflow'}
  end
  return {'nan'}
end
local value = redis.call('GET', KEYS[1])
if not exists then
  if ARGV[3] == '0' then
    redis.call('ZADD', KEYS[2], '+inf', ARGV[1])
  else
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    redis.call('ZADD', KEYS[2], tonumber(ARGV[4]) + tonumber(ARGV[3]), ARGV[1])
  end
end
local size = tonumber(ARGV[7]) + #value
redis.call('HSET', KEYS[3], ARGV[1], size)
redis.call('INCRBY', KEYS[4], size - old)
return {'ok', value}
