-- 0016 Request metadata: the `undelivered` outcome (B6). A key answered, but its answer broke
-- off before its first byte reached the router, so nothing reached the buyer (an upstream that
-- failed right after its headers, a key object restarted mid-answer). The buyer is refunded
-- and the key's earning for that request is reversed before it is flushed, so the row keeps
-- amount 0 and says why (objects/seller-key/seller-key.ts `undelivered`, docs/soak.md).
alter table public.request_log drop constraint request_log_outcome_known;
alter table public.request_log add constraint request_log_outcome_known check (
  outcome in ('served', 'refused', 'upstream_error', 'stream_cut', 'client_abort', 'undelivered'));
