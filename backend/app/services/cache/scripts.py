"""The cache's Lua scripts, the read statuses they return and the entry layout they share.

An entry is stored as "<generations>|<fresh until, Redis ms>|<payload>", the generations of
its namespace's tags joined by ",". Time is always Redis's own (TIME), so the clocks of the web
hosts never matter.
"""

from typing import Final

# Read statuses returned by GET_OR_LOCK.
FRESH: Final = 0
STALE: Final = 1  # another caller holds the lock and refreshes it
STALE_LOCKED: Final = 2  # this caller took the lock: it refreshes
MISS_LOCKED: Final = 3  # this caller took the lock: it computes
MISS_WAIT: Final = 4  # another caller holds the lock and computes

# KEYS[1] entry, KEYS[2] lock, KEYS[3..] the namespace's tag generations (one slot).
# ARGV[1] lock token, ARGV[2] lock TTL ms.
# Returns {status, generations} plus the entry for statuses 0-2. A missing generation is created
# as the current time in ms: after an eviction it can never equal a generation an old entry holds.
GET_OR_LOCK: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gens = {}
for i = 3, #KEYS do
  local g = redis.call('GET', KEYS[i])
  if not g then
    g = string.format('%.0f', now)
    redis.call('SET', KEYS[i], g, 'NX')
    g = redis.call('GET', KEYS[i])
  end
  gens[#gens + 1] = g
end
local current = table.concat(gens, ',')
local entry = redis.call('GET', KEYS[1])
if entry then
  local sep1 = string.find(entry, '|', 1, true)
  if sep1 and string.sub(entry, 1, sep1 - 1) == current then
    local sep2 = string.find(entry, '|', sep1 + 1, true)
    if tonumber(string.sub(entry, sep1 + 1, sep2 - 1)) > now then
      return {0, current, entry}
    end
    if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
      return {2, current, entry}
    end
    return {1, current, entry}
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {3, current}
end
return {4, current}
"""

# KEYS as GET_OR_LOCK. ARGV[1] lock token ('' when not holding it), ARGV[2] the generations read
# before computing, ARGV[3] fresh ms, ARGV[4] hard TTL ms, ARGV[5] payload.
# Stores only while the generations are still current; releases the lock if the token holds it.
# Returns 1 when stored, 0 when an invalidation made the value out of date.
STORE: Final = """
local gens = {}
for i = 3, #KEYS do gens[#gens + 1] = redis.call('GET', KEYS[i]) or '' end
local stored = 0
if table.concat(gens, ',') == ARGV[2] then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local fresh_until = string.format('%.0f', now + tonumber(ARGV[3]))
  redis.call('SET', KEYS[1], ARGV[2] .. '|' .. fresh_until .. '|' .. ARGV[5], 'PX', ARGV[4])
  stored = 1
end
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return stored
"""

# KEYS[1] lock; ARGV[1] token. Deletes the lock only if this token holds it. Returns 1 or 0.
UNLOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: tag generation keys of one namespace. No ARGV. Each becomes max(old + 1, now ms):
# strictly increasing, and above any value it had before an eviction. Returns nothing.
BUMP: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  local g = tonumber(redis.call('GET', KEYS[i]) or '0')
  redis.call('SET', KEYS[i], string.format('%.0f', math.max(g + 1, now)))
end
"""


def entry_payload(entry: bytes) -> bytes:
    """The payload of a stored entry (what follows "<generations>|<fresh until>|")."""
    first = entry.index(b"|")
    return entry[entry.index(b"|", first + 1) + 1 :]
