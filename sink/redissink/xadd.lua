-- Adds an outbox event to a stream unless its ID was added within the window.
-- KEYS[1]: the stream; KEYS[2]: the sorted set of event IDs added, scored by the time
-- (ms, Redis's clock) they were added.
-- ARGV[1]: event ID; ARGV[2]: window (ms); ARGV[3]: MAXLEN ~ (0: no trimming);
-- ARGV[4..]: the entry's field/value pairs.
-- Returns the new entry's ID, or 0 when the event was already added.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
local id
if tonumber(ARGV[3]) > 0 then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
else
  id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
-- The set of a stream that no longer gets events goes away after a window.
redis.call('PEXPIRE', KEYS[2], window)
return id
