-- wrk script for bench/ingest.py: a realistic mix of CI events, every request body unique.
--
-- Arguments (after "--" on wrk's command line): the bearer token, and a tag that keeps run ids and
-- job names unique across the wrk runs of one benchmark (warm-up, bare, ingestion).
--
-- The mix (a third argument "new,repeat,recovery,pass" in percent; bench/ingest.py --mix, default
-- 10,10,10,70; --stress-mix 60,25,15,0):
-- new failures: a repository/branch/job combination not reported before, so a failure opens;
-- repeats: an earlier failure's repository, branch and job with a new run id: an occurrence;
-- recoveries: an earlier failure's job passing again: the failure resolves as recovered;
-- passes: a job with no open failure passing, what most CI events are.
-- Repeats and successes pick among this thread's earlier failures, leaving out the most recent ones,
-- which may still be in flight on another connection.

local thread_count = 0
local threads = {}

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local NEW, REPEAT, RECOVERY = 0.60, 0.85, 1.0 -- cumulative shares: new failures, repeats, recoveries (init)
local IN_FLIGHT = 32

local REPOSITORIES = {
  "acme/payments-api", "acme/checkout-web", "acme/identity-service", "acme/ledger", "acme/search-indexer",
  "acme/mobile-bff", "acme/notifications", "acme/inventory", "acme/pricing-engine", "acme/admin-console",
  "acme/data-pipeline", "acme/shipping-service", "acme/reporting", "acme/feature-flags", "acme/infra-modules",
  "acme/customer-portal", "acme/fraud-detection", "acme/catalog-service", "acme/recommendations",
  "acme/sdk-js",
}
local SOURCES = {"github-actions", "gitlab-ci", "jenkins"}
local RUNNERS = {"ubuntu-22.04-8core", "linux-x64-large", "k8s-runner-pool-b", "macos-14-arm64"}
local AUTHORS = {
  "maria.garcia@acme.example", "j.okafor@acme.example", "li.wei@acme.example", "p.novak@acme.example",
  "sam.taylor@acme.example", "a.haddad@acme.example", "k.nakamura@acme.example", "r.singh@acme.example",
}
local FILES = {
  "src/billing/invoice.py", "src/billing/tax.py", "src/api/views.py", "src/api/serializers.py",
  "web/src/components/Cart.tsx", "web/src/pages/checkout.tsx", "migrations/0042_ledger_index.py",
  "Dockerfile", "charts/app/values.yaml", "go.mod", "internal/ledger/balance.go", "package-lock.json",
  "pom.xml", "src/main/java/com/acme/Billing.java", "tests/test_invoice.py", ".github/workflows/ci.yml",
}
local PROGRESS = {
  "##[group]Run actions/checkout@v4",
  "Syncing repository: acme/service",
  "Fetching the repository",
  "remote: Enumerating objects: 1432, done.",
  "Receiving objects: 100% (1432/1432), 2.31 MiB | 18.52 MiB/s, done.",
  "##[endgroup]",
  "Restoring cache for key: Linux-pip-3f9c2a1b7e",
  "Cache restored successfully",
  "Collecting requirements from requirements/ci.txt",
  "Successfully installed 87 packages",
  "Pulling image postgres:16-alpine",
  "Status: Downloaded newer image for postgres:16-alpine",
  "Starting service container redis:7",
  "Waiting for all services to be ready",
  "npm WARN deprecated inflight@1.0.6: This module is not supported",
  "added 1214 packages, and audited 1215 packages in 21s",
  "[INFO] Scanning for projects...",
  "[INFO] Building billing-service 3.14.0-SNAPSHOT",
  "platform linux -- Python 3.12.7, pytest-8.3.3, pluggy-1.5.0",
  "collected 1204 items",
  "tests/test_api.py ........................................ [ 12%]",
  "tests/test_models.py ..................................... [ 31%]",
  "ok  \tgithub.com/acme/ledger/internal/store\t1.204s",
}

-- One kind per realistic failing job: its name, its step, and the log lines that carry the error.
local KINDS = {
  {job = "test / unit (py3.12)", step = "pytest", tail = function(w)
    return "FAILED tests/test_" .. w .. ".py::test_" .. w .. "_totals - AssertionError: assert 1190 == 1200\n"
      .. "===== 1 failed, 1203 passed, 12 skipped in 84.12s (0:01:24) ====="
  end},
  {job = "unit-tests (node 20)", step = "npm test", tail = function(w)
    return "  ● Cart › applies " .. w .. " discount\n    expect(received).toBe(expected)\n"
      .. "Tests:       2 failed, 311 passed, 313 total"
  end},
  {job = "go test ./...", step = "go test", tail = function(w)
    return "--- FAIL: TestLedger_" .. w .. " (0.02s)\n    balance_test.go:88: got 99, want 100\n"
      .. "FAIL\tgithub.com/acme/ledger/internal/balance\t0.412s"
  end},
  {job = "test / integration (postgres-16)", step = "run integration suite", tail = function(w)
    return "E   psycopg.errors.UniqueViolation: duplicate key value violates unique constraint \"ledger_"
      .. w .. "_key\"\nE   DETAIL:  Key (account_id, period)=(42, 2025-11) already exists."
  end},
  {job = "build / docker-image", step = "docker build", tail = function(w)
    return "#12 ERROR: process \"/bin/sh -c pip install -r requirements.txt\" did not complete\n"
      .. "Error response from daemon: failed to create task for container " .. w
      .. ": OCI runtime create failed: runc create failed"
  end},
  {job = "lint / eslint", step = "npm run lint", tail = function(w)
    return "/home/runner/work/web/src/" .. w .. ".tsx\n"
      .. "  14:7  error  'total' is assigned a value but never used  no-unused-vars\n\n"
      .. "✖ 12 problems (12 errors, 0 warnings)"
  end},
  {job = "e2e / playwright (chromium)", step = "npx playwright test", tail = function(w)
    return "Error: browserType.launch: Executable doesn't exist at"
      .. " /ms-playwright/chromium-1091/chrome-linux/chrome\n  at " .. w .. ".spec.ts:12:3"
  end},
  {job = "security / trivy image", step = "trivy image", tail = function(w)
    return "acme/" .. w .. ":latest (alpine 3.19.1)\n"
      .. "Total: 3 (UNKNOWN: 0, LOW: 0, MEDIUM: 1, HIGH: 2, CRITICAL: 0)"
  end},
  {job = "db / migrations", step = "manage.py migrate", tail = function(w)
    return "django.db.utils.OperationalError: connection to server at \"db-" .. w
      .. "\" (10.0.3.4), port 5432 failed: Connection refused\n\tIs the server running on that host?"
  end},
  {job = "compile / java (jdk21)", step = "mvn -B verify", tail = function(w)
    return "[ERROR] COMPILATION ERROR :\n[ERROR] /src/main/java/com/acme/" .. w
      .. ".java:[42,17] error: cannot find symbol\n[ERROR]   symbol:   method roundHalfEven(BigDecimal)"
  end},
  {job = "perf / k6 checkout", step = "k6 run", tail = function(w)
    return "ERRO[0061] thresholds on metrics 'http_req_duration{scenario:" .. w .. "}' have been crossed"
  end},
  {job = "test / unit (py3.11)", step = "pytest", tail = function(w)
    return "##[error]The runner has received a shutdown signal. This can happen when the runner service is"
      .. " stopped, or a manually started runner is canceled.\n"
      .. "##[error]The operation was canceled. (" .. w .. ")"
  end},
}

local WORDS = {"invoice", "refund", "coupon", "ledger", "payout", "session", "webhook", "currency"}

local function pick(list)
  return list[math.random(#list)]
end

local function json_string(s)
  local escaped = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. escaped .. '"'
end

local function hex(chars)
  local parts = {}
  for i = 1, chars / 8 do
    parts[i] = string.format("%08x", math.random(0, 0x7fffffff))
  end
  return table.concat(parts)
end

local token, tag, headers
local seq = 0
local open = {} -- failures this thread reported and has not seen pass again

function init(args)
  token = args[1] or ""
  tag = args[2] or "run"
  local new, repeats, recoveries = (args[3] or "10,10,10,70"):match("^(%d+),(%d+),(%d+),%d+$")
  NEW = tonumber(new) / 100
  REPEAT = NEW + tonumber(repeats) / 100
  RECOVERY = REPEAT + tonumber(recoveries) / 100
  math.randomseed(os.time() + 7919 * (tid + 1))
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
  n_new, n_repeat, n_success, n_pass = 0, 0, 0, 0
end

local function new_failure()
  local kind = pick(KINDS)
  local r = math.random()
  local branch = "main"
  if r > 0.9 then
    branch = "release/2025.11"
  elseif r > 0.7 then
    branch = string.format("feature/PAY-%d-%s", math.random(1000, 9999), pick(WORDS))
  end
  local shard = string.format("%s-%d-%d", tag, tid, seq)
  return {
    repository = pick(REPOSITORIES),
    branch = branch,
    job = kind.job .. " [" .. shard .. "]",
    step = kind.step,
    kind = kind,
    word = pick(WORDS),
    source = pick(SOURCES),
  }
end

local function body(f, status)
  local run_id = string.format("%s.%d.%d", tag, tid, seq)
  local files = {}
  for i = 1, math.random(1, 4) do
    files[i] = json_string(pick(FILES))
  end
  local fields = {
    '"source":' .. json_string(f.source),
    '"repository":' .. json_string(f.repository),
    '"branch":' .. json_string(f.branch),
    '"commit":"' .. hex(40) .. '"',
    '"commit_author":' .. json_string(pick(AUTHORS)),
    '"run_id":"' .. run_id .. '"',
    '"attempt":1',
    '"job":' .. json_string(f.job),
    '"status":"' .. status .. '"',
    '"url":"https://ci.acme.example/' .. f.repository .. '/runs/' .. run_id .. '"',
    '"runner":' .. json_string(pick(RUNNERS)),
    '"changed_files":[' .. table.concat(files, ",") .. "]",
    '"finished_at":"' .. os.date("!%Y-%m-%dT%H:%M:%SZ") .. '"',
  }
  if status == "failure" then
    local lines = {}
    for i = 1, math.random(10, 20) do
      lines[i] = string.format("2025-11-24T08:%02d:%02d.%07dZ %s", math.random(0, 59), math.random(0, 59),
        math.random(0, 9999999), pick(PROGRESS))
    end
    lines[#lines + 1] = f.kind.tail(f.word)
    table.insert(fields, '"step":' .. json_string(f.step))
    table.insert(fields, '"log_excerpt":' .. json_string(table.concat(lines, "\n")))
  end
  return "{" .. table.concat(fields, ",") .. "}"
end

function request()
  seq = seq + 1
  local r = math.random()
  local eligible = #open - IN_FLIGHT
  local f, status
  if r >= RECOVERY then
    f = new_failure() -- a job not reported before, passing
    status = "success"
    n_pass = n_pass + 1
  elseif r < NEW or eligible < 1 then
    f = new_failure()
    table.insert(open, f)
    status = "failure"
    n_new = n_new + 1
  else
    local i = math.random(eligible)
    f = open[i]
    if r < REPEAT then
      status = "failure"
      n_repeat = n_repeat + 1
    else
      status = "success"
      table.remove(open, i)
      n_success = n_success + 1
    end
  end
  return wrk.format("POST", nil, headers, body(f, status))
end

function done(summary, latency, requests)
  local new, repeats, recoveries, passes = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    new = new + thread:get("n_new")
    repeats = repeats + thread:get("n_repeat")
    recoveries = recoveries + thread:get("n_success")
    passes = passes + thread:get("n_pass")
  end
  io.write(string.format("Generated mix: new=%d repeat=%d recovery=%d pass=%d\n", new, repeats, recoveries, passes))
  -- The latency at the middle of each thousandth of the requests, so that runs can be added up (wrk
  -- 4.1 gives a script percentiles, not its histogram).
  local quantiles = {}
  for i = 1, 1000 do
    quantiles[i] = string.format("%d", latency:percentile((i - 0.5) / 10))
  end
  io.write("Latency quantiles: " .. table.concat(quantiles, " ") .. "\n")
end
