-- fan_out.lua: included by route.lua: append one message to each of its partners' streams in
-- one shard, name each enabled partner that got it in `waking` (its caller wakes them all at
-- once with wake_partners, included before this), and say what each copy is for the message
-- index (index.lua): "<partner id> <state>".
-- KEYS from `key_at`: per partner its stream and its list of messages; ARGV from `arg_at`: the
-- partner ids. `wake` has a '1' per partner to schedule (enabled) and '0' otherwise; `had`,
-- when given, is true for a partner that has the message already (it is skipped).
-- A pending copy's state is just its entry id (which starts with the ms it was routed): the
-- state written once a message, on the hot path, is the cheapest one to write.
-- Returns how many partner streams it went to, and the copies.
local function fan_out(waking, dead, dead_max, now, retention, payload, message_id, wake,
                       key_at, arg_at, n, had)
  local routed = 0
  local copies = {}
  for i = 1, n do
    if not (had and had[i]) then
      local stream = KEYS[key_at + 2 * i - 2]
      local listed = KEYS[key_at + 2 * i - 1]
      local partner = ARGV[arg_at + i - 1]
      -- A script that fails half-way keeps what it wrote: a partner stream that refuses the
      -- message (a key of the wrong type) gets its message dead-lettered, replayable, instead
      -- of failing the fan-out to everyone.
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
        copies[#copies + 1] = partner .. ' ' .. state
      end
    end
  end
  return routed, copies
end
