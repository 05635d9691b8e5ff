-- fan_out.lua: included by the scripts that route (route, route_batch): append one message to
-- each of its partners' streams, dedupe the producer's id per partner, name each enabled
-- partner that got it in `waking` (its caller wakes them all at once with wake_partners,
-- included before this), and record the message in the index.
-- KEYS from `key_at`: the message's index entry, then per partner its stream, its dedupe marker
-- and its index of messages; ARGV from `arg_at`: the partner ids. `wake` has a '1' per partner
-- to schedule (enabled) and '0' otherwise.
-- A pending copy's index field is just its entry id (which starts with the ms it was routed):
-- the state written once a message, on the hot path, is the cheapest one to write.
local function fan_out(waking, dead, dead_max, now, retention, dedupe_ttl, payload, message_id,
                       wake, key_at, arg_at, n)
  local message_key = KEYS[key_at]
  local routed = 0
  local indexed = {}  -- field, value pairs of the message's hash: one per partner
  for i = 1, n do
    local stream = KEYS[key_at + 3 * i - 2]
    local seen = KEYS[key_at + 3 * i - 1]
    local index = KEYS[key_at + 3 * i]
    local partner = ARGV[arg_at + i - 1]
    if dedupe_ttl == 0 or redis.call('SET', seen, '1', 'NX', 'EX', dedupe_ttl) then
      -- A script that fails half-way keeps what it wrote, and the entry may be acknowledged
      -- already: a partner stream that refuses the message (a key of the wrong type) gets its
      -- message dead-lettered, replayable, instead of failing the fan-out to everyone.
      local appended, added = pcall(redis.call, 'XADD', stream, '*', 'm', payload)
      local state
      if appended then
        routed = routed + 1
        if string.sub(wake, i, i) == '1' then
          want_woken(waking, partner)
        end
        state = added
      else
        local dead_id = redis.call('XADD', dead, 'MAXLEN', '~', dead_max, '*',
          'reason', 'could not append to the partner stream: ' .. tostring(added.err or added),
          'partner', partner, 'message', payload, 'attempts', '[]')
        state = cjson.encode({s = 'dead', t = now, x = dead_id})
      end
      if retention > 0 then
        -- trimmed to the retention by release.lua, once a serve, not here once a message
        redis.call('ZADD', index, now, message_id)
        indexed[#indexed + 1] = partner
        indexed[#indexed + 1] = state
      end
    end
  end
  if #indexed > 0 then
    redis.call('HSET', message_key, 'event', payload, unpack(indexed))
    redis.call('PEXPIRE', message_key, retention)
  end
  return routed
end
