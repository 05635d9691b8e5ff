-- fan_out.lua: included by route.lua: append one message to each of its partners' streams in
-- one shard, name each enabled partner that got it in `waking` (its caller wakes them all at
-- once with wake_partners, included before this), and gather the message's fields of the
-- message index in `indexed`.
-- KEYS from `key_at`: per partner its stream and its list of messages; ARGV from `arg_at`: the
-- partner ids. `wake` has a '1' per partner to schedule (enabled) and '0' otherwise; `had`,
-- when given, is true for a partner that has the message already (it is skipped).
-- A pending copy's index field is just its entry id (which starts with the ms it was routed):
-- the state written once a message, on the hot path, is the cheapest one to write.
local function fan_out(waking, indexed, index_key, dead, dead_max, now, retention, payload,
                       message_id, wake, key_at, arg_at, n, had)
  local routed = 0
  local fields = nil  -- this message's fields of `index_key`
  for i = 1, n do
    if not (had and had[i]) then
    local stream = KEYS[key_at + 2 * i - 2]
    local listed = KEYS[key_at + 2 * i - 1]
    local partner = ARGV[arg_at + i - 1]
    -- A script that fails half-way keeps what it wrote: a partner stream that refuses the
    -- message (a key of the wrong type) gets its message dead-lettered, replayable, instead of
    -- failing the fan-out to everyone.
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
      redis.call('XADD', listed, '*', 'm', message_id)
      if not fields then
        fields = indexed[index_key]
        if not fields then
          fields = {}
          indexed[index_key] = fields
          indexed[#indexed + 1] = index_key
        end
        fields[#fields + 1] = message_id
        fields[#fields + 1] = payload
      end
      fields[#fields + 1] = message_id .. '\t' .. partner
      fields[#fields + 1] = state
    end
    end
  end
  return routed
end

-- Write what fan_out gathered: one HSET and one PEXPIRE per index hash, however many of the
-- call's messages it holds (notifier's own message ids share a hash per tenth of a second).
-- `indexed` lists its hashes in the order first written, and maps each to its fields: at most
-- a route call's worth (50 messages, 64 partners), well within what unpack takes.
local function write_index(indexed, retention)
  for _, key in ipairs(indexed) do
    redis.call('HSET', key, unpack(indexed[key]))
    redis.call('PEXPIRE', key, retention)
  end
end
