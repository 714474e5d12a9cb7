-- Every node's subscribers of one channel, dropping nodes whose heartbeat
-- expired (a killed node's entries go with its heartbeat).
--
-- KEYS[1]  hash: node id -> that node's presence (JSON)
-- KEYS[2]  sorted set: node id -> when its entry expires (ms)
-- ARGV[1]  now, ms since the Unix epoch
-- Returns HGETALL of the hash, expired nodes removed.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, node in ipairs(expired) do
  redis.call('HDEL', KEYS[1], node)
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
