-- Publish one message of a channel, atomically: the next offset of the
-- channel's epoch, the history entry, and the announcement to every node.
--
-- KEYS[1]  the channel's stream (history)
-- KEYS[2]  the channel's meta hash: e = epoch (a decimal u64, kept as text:
--          Lua numbers are doubles), s = newest offset, a = history age (ms)
-- ARGV[1]  payload
-- ARGV[2]  kind: "t" (text) or "b" (binary)
-- ARGV[3]  time, ms since the Unix epoch
-- ARGV[4]  history length (MAXLEN)
-- ARGV[5]  history age, ms (the stream expires after it; reads filter by it)
-- ARGV[6]  meta TTL, seconds (how long the epoch outlives the last use)
-- ARGV[7]  an epoch to use if the channel has none (a new lifetime)
-- ARGV[8]  the pub/sub topic
-- Returns {offset, epoch}.
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[7]
  redis.call('HSET', KEYS[2], 'e', epoch)
end
local top = redis.call('HINCRBY', KEYS[2], 's', 1)
redis.call('HSET', KEYS[2], 'a', ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[6])
if top == 1 then
  -- A new epoch: whatever stream is left belongs to an earlier one.
  redis.call('DEL', KEYS[1])
end
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], top, 't', ARGV[3], 'k', ARGV[2], 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[8],
  'c1:' .. top .. ':' .. epoch .. ':' .. ARGV[3] .. ':' .. ARGV[2] .. ':' .. ARGV[1])
return {top, epoch}
