-- kv set within a module's budgets.
-- KEYS[1] the value; KEYS[2] index: key -> expiry ms (+inf: none);
-- KEYS[3] sizes: key -> bytes; KEYS[4] the module's total bytes.
-- ARGV[1] key, ARGV[2] value, ARGV[3] ttl ms (0: none), ARGV[4] now ms,
-- ARGV[5] most keys, ARGV[6] most bytes, ARGV[7] this entry's bytes.
-- Returns 'ok', 'full' or 'full-bytes'.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, 100)
for _, k in ipairs(expired) do
  redis.call('DECRBY', KEYS[4], tonumber(redis.call('HGET', KEYS[3], k) or '0'))
  redis.call('HDEL', KEYS[3], k)
  redis.call('ZREM', KEYS[2], k)
end
local old = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if old == 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return 'full'
end
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
local size = tonumber(ARGV[7])
if total - old + size > tonumber(ARGV[6]) then
  return 'full-bytes'
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], '+inf', ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[4]) + tonumber(ARGV[3]), ARGV[1])
end
redis.call('HSET', KEYS[3], ARGV[1], size)
redis.call('INCRBY', KEYS[4], size - old)
return 'ok'
