-- index.lua: included by route.lua, settle.lua and resend.lua: the message index (keys.py).
-- A message is one field of the hash of its ingress entry's tenth of a second,
-- <home>messages:<ms // 100>: its id -> "<copies>\n<event>", where copies are
-- "<partner id> <state>" joined by tabs, a state being the copy's entry id in the partner
-- stream (while it waits; a look-up reads where it is now) or a JSON object once it has more
-- to say (dead-lettered). One field a message, whatever its fan-out: the event is kept once,
-- and a copy costs its partner id and state. A message notifier named (msg_<entry id>) says
-- where it is; a producer's id is found through <home>ids:<generation>, id -> the ingress
-- entry it was first routed from, in generations of `gen_ms` (route time // gen_ms).
-- Keys are made here from the home's prefix (the caller passes it): all of them are in the
-- home's slot, and which bucket a producer's message is in is only known once its generation
-- is read, inside the script.

-- The hash of an entry's tenth of a second: its ms // 100, cut from the text (a number's
-- formatting costs more than the rest of a part's look-up).
local function index_bucket(home, entry_id)
  local ms = string.match(entry_id, '^0*(%d+)')
  return home .. 'messages:' .. (#ms > 2 and string.sub(ms, 1, -3) or '0')
end

local function index_generation(home, gen)
  return home .. 'ids:' .. gen
end

-- The entry id in a message id notifier gave (msg_<entry id>), else nil; as keys.named_entry.
local function index_named(message_id)
  local ms, seq = string.match(message_id, '^msg_(%d+)%-(%d+)$')
  if ms and #ms <= 15 and #seq <= 20 then
    return ms .. '-' .. seq
  end
  return nil
end

-- The hash holding a message (nil: not known), its generations read newest first, back to
-- the one of `since` (ms).
local function index_locate(home, message_id, now, gen_ms, since)
  local named = index_named(message_id)
  if named then
    return index_bucket(home, named)
  end
  for gen = math.floor(now / gen_ms), math.floor(since / gen_ms), -1 do
    local entry = redis.call('HGET', index_generation(home, gen), message_id)
    if entry then
      return index_bucket(home, entry)
    end
  end
  return nil
end

-- A field's copies and event. A field written before copies were kept in it (an upgrade)
-- is the event alone, JSON: it has no copies.
local function index_split(value)
  local nl = string.find(value, '\n', 1, true)
  if not nl or string.sub(value, 1, 1) == '{' then
    return '', value
  end
  return string.sub(value, 1, nl - 1), string.sub(value, nl + 1)
end

-- The state of `partner`'s copy in `copies` (nil: it has none).
local function index_copy(copies, partner)
  local padded = '\t' .. copies .. '\t'
  local at = string.find(padded, '\t' .. partner .. ' ', 1, true)
  if not at then
    return nil
  end
  local from = at + #partner + 2
  return string.sub(padded, from, string.find(padded, '\t', from, true) - 1)
end

-- `copies` with `partner`'s state set to `state`.
local function index_with(copies, partner, state)
  local out = {}
  for copy in string.gmatch(copies, '[^\t]+') do
    if string.sub(copy, 1, #partner + 1) ~= partner .. ' ' then
      out[#out + 1] = copy
    end
  end
  out[#out + 1] = partner .. ' ' .. state
  return table.concat(out, '\t')
end
