"""
The Lua scripts of the Redis broker, and the keys they use.  Each runs
atomically in Redis, which is what gives every topic one order, its offsets
no holes, and C{OK PUB <n>} a count taken at the moment of publishing.
They are loaded with C{SCRIPT LOAD} on every connection and run with
C{EVALSHA}.

Keys, for C{--broker-prefix P} and topic C{T} (see docs/shared-state.md for
the contract other programs may rely on)::

    P:nodes        sorted set: node id -> last heartbeat (Redis time, s)
    P:node:<id>    set: the topics node <id> has subscribers for
    P:subs:T       hash: node id -> how many subscribers it has for T
    P:meta:T       hash: e -> epoch, o -> last offset
    P:hist:T       stream: the last --broker-history envelopes, id <offset>-0
    P:topic:T      the pub/sub channel the envelopes are published on

This module is plain data; it imports no client.
"""

from __future__ import annotations

import hashlib

import attrs

__all__ = ["SCRIPTS", "Keys", "Script"]

# Sum the subscriber counts of the live nodes: KEYS[subs], KEYS[nodes],
# with `ttl` the seconds a node still counts after its last heartbeat.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""
_LIVE_COUNT = """
local function live_count(subs, nodes, ttl)
  local alive = now - tonumber(ttl)
  local counts = redis.call('HGETALL', subs)
  local n = 0
  for i = 1, #counts, 2 do
    local seen = redis.call('ZSCORE', nodes, counts[i])
    if seen and tonumber(seen) >= alive then n = n + tonumber(counts[i + 1]) end
  end
  return n
end
"""
_FORGET_NODE = """
local function forget_node(nodes, prefix, node)
  local set = prefix .. ':node:' .. node
  local topics = redis.call('SMEMBERS', set)
  for j = 1, #topics do redis.call('HDEL', prefix .. ':subs:' .. topics[j], node) end
  redis.call('DEL', set)
  redis.call('ZREM', nodes, node)
end
"""


@attrs.frozen
class Script:
    """
    One Lua script and its SHA1, the name C{EVALSHA} calls it by.
    """

    name: str
    source: bytes

    @property
    def sha(self) -> str:
        """
        The script's SHA1, as Redis names it.
        """
        return hashlib.sha1(self.source).hexdigest()


#: KEYS: meta, hist, subs, nodes.  ARGV: channel, frame, origin,
#: sender_subscribed (0/1), epoch to start with, history length, ttl,
#: published time, expiry.  Returns the live subscriber count.
PUBLISH = Script(
    "publish",
    (
        _NOW
        + _LIVE_COUNT
        + """
local n = live_count(KEYS[3], KEYS[4], ARGV[7])
if ARGV[4] == '1' and n > 0 then n = n - 1 end
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
-- As an integer: Lua's own conversion of a number writes 1e+14.
local offset = string.format('%d', redis.call('HINCRBY', KEYS[1], 'o', 1))
local envelope = table.concat({epoch, offset, ARGV[8], ARGV[3], ARGV[2]}, ' ')
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[6], offset .. '-0', 'm', envelope)
redis.call('EXPIRE', KEYS[1], ARGV[9])
redis.call('EXPIRE', KEYS[2], ARGV[9])
redis.call('PUBLISH', ARGV[1], envelope)
return n
"""
    ).encode(),
)

#: KEYS: meta, hist.  ARGV: known epoch (or empty), after offset, limit.
#: Returns {epoch or "", last offset, the envelope at the offset or "",
#: envelope...}: the history after the offset, or from the epoch's start
#: when the epoch is not the known one.  The envelope at the offset lets
#: the node check that it is the one it delivered (not rewritten after a
#: rewind).
FETCH = Script(
    "fetch",
    b"""
local meta = redis.call('HMGET', KEYS[1], 'e', 'o')
local epoch = meta[1]
if not epoch then return {'', 0, ''} end
local current = tonumber(meta[2])
local after = tonumber(ARGV[2])
if epoch ~= ARGV[1] then after = 0 end
local out = {epoch, current, ''}
if after > 0 then
  local at = string.format('%d-0', after)
  local here = redis.call('XRANGE', KEYS[2], at, at)
  if #here > 0 then out[3] = here[1][2][2] end
end
if current > after then
  local first = string.format('(%d-0', after)
  local entries = redis.call('XRANGE', KEYS[2], first, '+', 'COUNT', ARGV[3])
  for i = 1, #entries do out[#out + 1] = entries[i][2][2] end
end
return out
""",
)

#: KEYS: subs, node's topic set, meta.  ARGV: node, count, topic.
#: Records this node's subscriber count for the topic; returns
#: {epoch or "", last offset}: the topic's position now.
SET_COUNT = Script(
    "set_count",
    b"""
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[3])
end
local meta = redis.call('HMGET', KEYS[3], 'e', 'o')
if not meta[1] then return {'', 0} end
return {meta[1], tonumber(meta[2])}
""",
)

#: KEYS: subs, nodes.  ARGV: ttl.  Returns the live subscriber count.
COUNT = Script(
    "count",
    (_NOW + _LIVE_COUNT + "\nreturn live_count(KEYS[1], KEYS[2], ARGV[1])\n").encode(),
)

#: KEYS: nodes.  ARGV: node, ttl, prefix.  Marks the node alive and forgets
#: the nodes silent for longer than the ttl; returns {how many it forgot,
#: 1 when the node itself was not registered (new, or forgotten: its
#: counts are gone) else 0}.
HEARTBEAT = Script(
    "heartbeat",
    (
        _NOW
        + _FORGET_NODE
        + """
local rejoined = redis.call('ZADD', KEYS[1], now, ARGV[1])
local limit = '(' .. (now - tonumber(ARGV[2]))
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', limit)
for i = 1, #dead do forget_node(KEYS[1], ARGV[3], dead[i]) end
return {#dead, rejoined}
"""
    ).encode(),
)

#: KEYS: nodes.  ARGV: node, prefix.  A node that stops forgets itself.
LEAVE = Script(
    "leave",
    (_FORGET_NODE + "\nforget_node(KEYS[1], ARGV[2], ARGV[1])\nreturn 1\n").encode(),
)

#: Every script, by name.
SCRIPTS: dict[str, Script] = {
    script.name: script
    for script in (PUBLISH, FETCH, SET_COUNT, COUNT, HEARTBEAT, LEAVE)
}


@attrs.frozen
class Keys:
    """
    The key and channel names of one C{--broker-prefix}.
    """

    prefix: bytes

    @property
    def nodes(self) -> bytes:
        """
        The sorted set of live nodes.
        """
        return self.prefix + b":nodes"

    def node(self, node: bytes) -> bytes:
        """
        The set of topics C{node} counts subscribers for.
        """
        return self.prefix + b":node:" + node

    def subs(self, topic: bytes) -> bytes:
        """
        The per-node subscriber counts of C{topic}.
        """
        return self.prefix + b":subs:" + topic

    def meta(self, topic: bytes) -> bytes:
        """
        The epoch and last offset of C{topic}.
        """
        return self.prefix + b":meta:" + topic

    def hist(self, topic: bytes) -> bytes:
        """
        The history stream of C{topic}.
        """
        return self.prefix + b":hist:" + topic

    def channel(self, topic: bytes) -> bytes:
        """
        The pub/sub channel of C{topic}.
        """
        return self.prefix + b":topic:" + topic

    def topic_of(self, channel: bytes) -> bytes | None:
        """
        The topic of a channel name, or L{None} when it is not one of ours.
        """
        head = self.prefix + b":topic:"
        return channel[len(head) :] if channel.startswith(head) else None
