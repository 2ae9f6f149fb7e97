\timing on
CREATE OR REPLACE FUNCTION pg_temp.u7(ts timestamptz) RETURNS uuid LANGUAGE sql AS
$$ SELECT (lpad(to_hex((extract(epoch from ts)*1000)::bigint),12,'0') || '7' || substr(md5(random()::text),1,3) || '8' || substr(md5(random()::text),1,15))::uuid $$;
INSERT INTO webhooks_webhookevent (id, provider, event_id, type, object_id, customer_id, livemode, api_version,
  provider_created_at, raw_body, status, received_at, processed_at, traceparent, attempts, next_attempt_at, lease_until, last_error, waiting_on)
SELECT pg_temp.u7(now() - interval '200 days' + g * interval '15 seconds'), 'stripe', 'evt_seed_' || g, 'customer.subscription.updated',
  'sub_' || (g % 200000), 'cus_' || (g % 200000), false, '2024-06-20',
  now() - interval '200 days' + g * interval '15 seconds',
  '{"id":"evt_seed_' || g || '","object":"event","type":"customer.subscription.updated","data":{"object":{"id":"sub_' || (g % 200000) || '","object":"subscription","customer":"cus_' || (g % 200000) || '","status":"active","items":{"data":[{"price":{"id":"price_x"}}]}}}}',
  'processed', now() - interval '200 days' + g * interval '15 seconds', now() - interval '200 days' + g * interval '15 seconds', '', 1,
  now() - interval '200 days' + g * interval '15 seconds', NULL, '', ''
FROM generate_series(1, 1000000) g;
INSERT INTO tasks_outboxmessage (id, type, subject, data, status, created_at, published_at, traceparent, attempts, next_attempt_at, last_error)
SELECT pg_temp.u7(now() - interval '200 days' + g * interval '15 seconds'), 'subscription.activated', 'subscription:' || (g % 200000),
  '{"user_id":"x","plan":"family"}'::jsonb, 'published', now() - interval '200 days' + g * interval '15 seconds',
  now() - interval '200 days' + g * interval '15 seconds', '', 1, now() - interval '200 days' + g * interval '15 seconds', ''
FROM generate_series(1, 1000000) g;
VACUUM ANALYZE webhooks_webhookevent;
VACUUM ANALYZE tasks_outboxmessage;
SELECT pg_size_pretty(pg_total_relation_size('webhooks_webhookevent')), pg_size_pretty(pg_total_relation_size('tasks_outboxmessage'));
