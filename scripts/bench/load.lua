-- wrk script: queries and single-record adds, mixed. Each request is, with probability
-- WRITE_SHARE (default 0), an add of one DIM-d record (default 8) with an id unique per run
-- (RUN), thread and request, sent to ADD_PATH; otherwise a POST of the JSON body in QUERY_FILE
-- to QUERY_PATH. A path left unset is the path of wrk's URL. AUTH_TOKEN: see below.
local run = os.getenv("RUN") or "run"
local share = tonumber(os.getenv("WRITE_SHARE") or "0")
local dim = tonumber(os.getenv("DIM") or "8")
local query_path, add_path = os.getenv("QUERY_PATH"), os.getenv("ADD_PATH")
local headers = { ["Content-Type"] = "application/json" }
-- AUTH_TOKEN, when set, is sent as a bearer token (a proxy with tokens declared).
if os.getenv("AUTH_TOKEN") and os.getenv("AUTH_TOKEN") ~= "" then
  headers["Authorization"] = "Bearer " .. os.getenv("AUTH_TOKEN")
end
local query = nil
if share < 1 then
  local f = assert(io.open(os.getenv("QUERY_FILE"), "r"))
  query = f:read("*a")
  f:close()
end
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local counter = 0
function request()
  counter = counter + 1
  if share > 0 and math.random() < share then
    local values = {}
    for i = 1, dim do
      values[i] = string.format("%.4f", math.random())
    end
    local body = string.format('{"ids":["%s-%d-%d"],"embeddings":[[%s]],"documents":["record %d"]}',
      run, tid, counter, table.concat(values, ","), counter)
    return wrk.format("POST", add_path, headers, body)
  end
  return wrk.format("POST", query_path, headers, query)
end
