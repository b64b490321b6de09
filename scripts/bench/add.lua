-- wrk script: single-record adds with ids unique per run, thread and request.
-- RUN names the run (so repeated runs never reuse an id); DIM is the embedding size.
local run = os.getenv("RUN") or "run"
local dim = tonumber(os.getenv("DIM") or "8")
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local counter = 0
function request()
  counter = counter + 1
  local values = {}
  for i = 1, dim do
    values[i] = string.format("%.4f", math.random())
  end
  local body = string.format('{"ids":["%s-%d-%d"],"embeddings":[[%s]],"documents":["record %d"]}',
    run, tid, counter, table.concat(values, ","), counter)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end
