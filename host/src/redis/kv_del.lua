-- kv delete. KEYS as in kv_set.lua; ARGV[1] key. Returns 1 if a value was
-- there.
local existed = redis.call('DEL', KEYS[1])
redis.call('DECRBY', KEYS[4], tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0'))
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return existed
