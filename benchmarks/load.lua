-- wrk script for benchmarks/load.py: POST /v1/chat/completions with a mix of cache hits and misses.
--
-- A share of requests (`hit_share`) asks one of a fixed pool of prompts, the same in every thread,
-- so each is a cache hit after its first sight; the rest ask a unique prompt (a miss that goes on
-- to the upstream). Unique prompts are random words plus a thread/sequence number, so they are
-- neither exact nor semantic repeats of each other or of the pool.
--
--   wrk -s load.lua URL -- <api key> <model> <hit share> <pool size> <seed>
--
-- done() prints `LOAD <what> <key> <value>` lines: totals, per-second completions, cache outcomes.

local WORDS = {
  "river", "galaxy", "pencil", "violin", "harbor", "cactus", "tundra", "lantern", "meadow", "glacier",
  "compiler", "orchid", "saddle", "typhoon", "mosaic", "falcon", "quartz", "bakery", "canyon", "puzzle",
  "walrus", "theorem", "ferry", "jasmine", "volcano", "ledger", "tractor", "sonnet", "prism", "anchor",
  "biscuit", "comet", "dungeon", "eclipse", "fjord", "gazelle", "hammock", "igloo", "jungle", "kettle",
  "lobster", "magnet", "nebula", "oyster", "parrot", "quiver", "rocket", "saffron", "tornado", "umbrella",
  "vortex", "wizard", "yacht", "zeppelin", "almond", "bishop", "cobalt", "dolphin", "emerald", "furnace",
  "granite", "helmet", "ivory", "jigsaw", "kimono", "lagoon", "mustard", "napkin", "obelisk", "pigeon",
  "quasar", "raven", "sapphire", "thimble", "uranium", "velvet", "whistle", "xylophone", "yodel", "zucchini",
  "auction", "bamboo", "chimney", "dynamo", "engine", "fossil", "gondola", "harpoon", "insect", "javelin",
  "kayak", "lichen", "mammoth", "nutmeg", "origami", "pyramid", "quill", "rhubarb", "sequoia", "tapestry",
}
local VERBS = {"explain", "describe", "compare", "summarize", "list facts about", "write a story about",
               "give advice on", "invent a recipe with", "plan a trip involving", "design a game about"}

local threads = {}

function setup(thread)  -- runs in the main Lua state, before each thread's init()
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

local function sentence(n)
  local parts = {VERBS[math.random(#VERBS)]}
  for _ = 1, n do
    parts[#parts + 1] = WORDS[math.random(#WORDS)]
  end
  return table.concat(parts, " ")
end

local function body(prompt)
  -- JSON-safe: prompts are plain lowercase words and digits.
  return '{"model":"' .. model .. '","temperature":0,"max_tokens":16,' ..
         '"messages":[{"role":"user","content":"' .. prompt .. '"}]}'
end

function init(args)
  local key = args[1] or "bench-key-0001"
  model = args[2] or "bench-model"
  hit_share = tonumber(args[3] or "0.5")
  local pool_size = tonumber(args[4] or "200")
  local seed = tonumber(args[5] or "1")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
  -- The pool is the same in every thread: the same seed.
  math.randomseed(seed)
  pool = {}
  for i = 1, pool_size do
    pool[i] = body("pool question " .. i .. ": " .. sentence(6))
  end
  math.randomseed(seed * 7919 + thread_id * 104729 + 17)
  sequence = 0
  per_second = {}
  outcomes = {}
  statuses = {}
end

function request()
  if math.random() < hit_share then
    return wrk.format(nil, nil, nil, pool[math.random(#pool)])
  end
  sequence = sequence + 1
  local prompt = "unique " .. thread_id .. "-" .. sequence .. ": " .. sentence(8)
  return wrk.format(nil, nil, nil, body(prompt))
end

function response(status, headers, _)
  local now = os.time()
  per_second[now] = (per_second[now] or 0) + 1
  local outcome = headers["x-tiergate-cache"] or headers["X-Tiergate-Cache"] or "none"
  if headers["x-tiergate-coalesced"] then
    outcome = "coalesced"
  end
  outcomes[outcome] = (outcomes[outcome] or 0) + 1
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format("LOAD total requests %d\nLOAD total duration_us %d\nLOAD total bytes %d\n",
                         summary.requests, summary.duration, summary.bytes))
  io.write(string.format("LOAD errors connect %d\nLOAD errors read %d\nLOAD errors write %d\n",
                         e.connect, e.read, e.write))
  io.write(string.format("LOAD errors timeout %d\nLOAD errors status %d\n", e.timeout, e.status))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("LOAD latency_us p%s %d\n", p, latency:percentile(p)))
  end
  io.write(string.format("LOAD latency_us mean %.1f\nLOAD latency_us max %d\n", latency.mean, latency.max))
  local merged = {second = {}, outcome = {}, status = {}}
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("per_second")) do merged.second[k] = (merged.second[k] or 0) + v end
    for k, v in pairs(thread:get("outcomes")) do merged.outcome[k] = (merged.outcome[k] or 0) + v end
    for k, v in pairs(thread:get("statuses")) do merged.status[k] = (merged.status[k] or 0) + v end
  end
  for what, counts in pairs(merged) do
    for k, v in pairs(counts) do
      io.write(string.format("LOAD %s %s %d\n", what, tostring(k), v))
    end
  end
end
