-- Drop a channel's history and start a new epoch: every cursor of the old
-- one gets a reset (the epochs differ), never a silent gap.
--
-- KEYS[1]  the channel's stream
-- KEYS[2]  the channel's meta hash (see publish.lua)
-- ARGV[1]  the new epoch
-- ARGV[2]  meta TTL, seconds
-- Returns the new epoch.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'e', ARGV[1], 's', 0)
redis.call('EXPIRE', KEYS[2], ARGV[2])
return ARGV[1]
