-- wrk script for the webhook benchmarks (dispatcher-bench --only serve): every request is one
-- pre-signed POST from a file of "signature<TAB>body" lines, written by the benchmark, so that
-- the load generator does no hashing of its own. Thread k of n sends lines k, k+n, k+2n…, so
-- no two requests carry the same status until the file is used up.
--   wrk -t2 -c16 -d10s -s webhook.lua http://127.0.0.1:PORT -- BODIES_FILE 2   (the last: wrk's -t)
local next_id = 0

function setup(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
end

function init(args)
    bodies = {}
    local step = tonumber(args[2])
    local n = 0
    for line in io.lines(args[1]) do
        if n % step == id then
            local tab = line:find("\t", 1, true)
            bodies[#bodies + 1] = wrk.format("POST", "/webhook",
                { ["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = line:sub(1, tab - 1) },
                line:sub(tab + 1))
        end
        n = n + 1
    end
    cursor = 0
end

function request()
    cursor = cursor + 1
    return bodies[(cursor - 1) % #bodies + 1]
end

function done(summary, latency, requests)
    local non2xx = summary.errors.status
    local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
    io.write(string.format(
        "WRK_JSON {\"requests\":%d,\"seconds\":%.6f,\"non2xx\":%d,\"errors\":%d,\"p50_us\":%d,\"p99_us\":%d,\"max_us\":%d}\n",
        summary.requests, summary.duration / 1e6, non2xx, errors,
        latency:percentile(50), latency:percentile(99), latency.max))
end
