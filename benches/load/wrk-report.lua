-- wrk script for the load benchmark: sends the manifest Accept header (WRK_ACCEPT) and, when done, prints one
-- machine-readable line with exact figures (requests, bytes, duration, p50/p99 latency in microseconds, errors).
-- bytes = response bytes incl. headers, as in wrk's own Transfer/sec.
local accept = os.getenv("WRK_ACCEPT")
if accept and accept ~= "" then
  wrk.headers["Accept"] = accept
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d bytes=%d duration_us=%d p50_us=%d p99_us=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.bytes, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
