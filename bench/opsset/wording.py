"""The words of the generated ops history (bench/opsgen.py): services, handles, incident stories, pools.

Data only. Every free-text field has several wordings so reports of one kind are not template-identical,
and every incident story carries two questions about each of its two main reports (the anomaly and the
root cause): ``ask_*`` shares words with the report (a ranked question as an engineer would type it),
``para_*`` shares no content word with it (a paraphrase: ``python bench/opsgen.py --check`` verifies
this on every generated set, counting Porter and Snowball stems, so "rolled" and "roll" or "deploys"
and "deployment" count as shared).

A paraphrase must avoid every word of its target report: the wordings below, the service, the
environment, field names (``service``, ``env``, ``metric``, ``value``, ``baseline``...) and values. The
stories' details (numbers, paths, versions) are invented; none of it describes a real system.
"""

from __future__ import annotations

from dataclasses import dataclass

SERVICES: tuple[str, ...] = (
    "api-gateway", "checkout", "payments", "auth", "search-indexer", "billing-worker", "inventory",
    "notifications", "user-profile", "ledger", "recommendations", "media-transcoder", "edge-proxy",
    "order-router", "fraud-scorer", "session-store", "shipping-quotes", "feature-flags",
)  # fmt: skip

# Who reports what (weights). Handles are mesh handles: lower case, digits, "-".
REPORTERS: dict[str, tuple[tuple[str, int], ...]] = {
    "deploy": (("deploy", 60), ("release-manager", 25), ("ci-runner", 15)),
    "rollback": (("deploy", 40), ("sre-oncall", 30), ("canary-analyzer", 20), ("release-manager", 10)),
    "flaky_test": (("test-runner", 50), ("flake-hunter", 30), ("ci-runner", 20)),
    "test_quarantined": (("flake-hunter", 70), ("test-runner", 30)),
    "anomaly": (("monitor", 60), ("canary-analyzer", 20), ("capacity-planner", 20)),
    "root_cause": (("triage", 70), ("sre-oncall", 30)),
    "config_change": (("config-bot", 60), ("sre-oncall", 40)),
    "incident_opened": (("incident-bot", 100),),
    "incident_resolved": (("incident-bot", 100),),
}

ENVS: tuple[tuple[str, int], ...] = (("production", 70), ("staging", 20), ("canary", 10))


@dataclass(frozen=True, slots=True)
class Story:
    """An incident: a symptom (the anomaly), a cause (the root cause), a remedy, and questions on each.

    ``remedy``: ``"rollback"`` (the deploy before it is rolled back), ``"config"`` (a config change on the
    incident's trace) or ``"hotfix"`` (a deploy on the incident's trace). ``fix``: wordings of the remedy's
    reason or summary. ``key``/``old``/``new``: the config change of a ``"config"`` remedy.
    """

    key: str
    services: tuple[str, ...]
    metric: str
    value: str
    baseline: str
    title: str
    symptom: tuple[str, ...]
    cause: tuple[str, ...]
    remedy: str
    fix: tuple[str, ...]
    ask_symptom: str
    ask_cause: str
    para_symptom: str
    para_cause: str
    config: tuple[str, str, str] = ("", "", "")


STORIES: tuple[Story, ...] = (
    Story(
        "pool-shrunk", ("payments", "ledger", "order-router"), "p99_latency_ms", "2400", "180",
        "Charge path latency",
        ("p99 on POST /charge jumped from 180 ms to 2.4 s, timeouts piling up at the gateway",
         "charge requests stalling: p99 2.4s vs 180ms baseline and upstream timeouts climbing",
         "Latency cliff on the /charge path right after the 14:00 release, p99 now around 2.4 s"),
        ("DB connection pool capped at 10 after the ORM upgrade reset the pool defaults; handlers queue for a free connection",
         "ORM upgrade silently dropped our pool size override (50 -> 10), so handlers block waiting on the DB"),
        "rollback",
        ("reverting the ORM upgrade until the pool override is restored", "rolled back: pool size regression in the new build"),
        "When did the charge p99 latency jump to 2.4 s?", "What do we know about the DB connection pool capped at 10 after the ORM upgrade?",
        "When did taking customers' money become painfully slow?",
        "Which slowdown came from a dependency bump shrinking how many database sessions we may hold at once?",
    ),
    Story(
        "cert-expired", ("edge-proxy", "api-gateway"), "tls_handshake_errors", "41%", "0.1%",
        "TLS handshakes failing",
        ("TLS handshake failures for about 40% of clients; browsers report an invalid chain",
         "handshake errors spiking, roughly 4 in 10 TLS connections rejected with a bad chain"),
        ("intermediate certificate expired overnight; the auto-renewal cron had been disabled during the March cleanup",
         "the intermediate cert lapsed at 02:00 because renewal was switched off in March, unnoticed since"),
        "config",
        ("re-enabled the cert renewal cron and pushed a fresh chain", "renewal job back on, new intermediate installed"),
        "When did the TLS handshake failures with an invalid chain start?", "Tell me about the intermediate certificate that expired because renewal was switched off in March.",
        "When could a big share of visitors not establish a secure session with us?",
        "Which outage came from an out-of-date security credential that nobody refreshed?",
        ("cert_renewal.enabled", "false", "true"),
    ),
    Story(
        "cache-unbounded", ("recommendations", "search-indexer", "media-transcoder"), "memory_rss_mb", "7900", "2100",
        "Pods OOM-killed",
        ("RSS climbing ~300 MB/hour, pods OOM-killed every 40 minutes",
         "resident memory grows without bound until the OOM killer hits, restarts every 40 min"),
        ("unbounded LRU in the feature cache: eviction never ran because max_size was read as a string",
         "feature cache LRU had no effective cap (max_size arrived as a string, comparison always false), so it grew forever"),
        "rollback",
        ("rolling back the cache refactor", "back to the previous build while the LRU cap is fixed"),
        "When were pods OOM-killed with RSS climbing?", "What was the story with the unbounded LRU feature cache?",
        "Which workload kept swallowing RAM until it got terminated again and again?",
        "What made a lookup store expand endlessly since its upper bound was parsed as text?",
    ),
    Story(
        "dns-ttl", ("api-gateway", "notifications"), "http_5xx_ratio", "8.2%", "0.3%",
        "5xx after load balancer swap",
        ("5xx spike to 8% after the LB swap; a third of upstream calls hit dead IPs",
         "errors at 8% since the LB swap, upstream calls still resolving to the old IPs"),
        ("resolver cached the old load balancer addresses for 24h: TTL on the internal zone was 86400 instead of 60",
         "internal DNS zone had TTL 86400, so clients kept the retired LB addresses for a day"),
        "config",
        ("dropped the internal zone TTL to 60 and flushed resolvers", "TTL fixed to 60s, resolver caches flushed"),
        "When did we get the 5xx spike after the LB swap?", "Tell me about the old load balancer addresses cached because of TTL 86400.",
        "When were many requests sent to hosts that had already been retired?",
        "Which failure came from name lookups being remembered far too long?",
        ("dns.internal_zone_ttl", "86400", "60"),
    ),
    Story(
        "disk-full", ("billing-worker", "ledger"), "disk_used_pct", "100", "55",
        "Worker disk full",
        ("write errors: No space left on device on /var/lib/worker, queue backing up",
         "ENOSPC on the worker volume, jobs failing to write and the queue growing"),
        ("log rotation broken since the base image update; debug logs filled the 50 GB volume",
         "logrotate missing from the new base image, so debug logs ate the whole 50 GB disk"),
        "hotfix",
        ("hotfix: logrotate restored in the image, debug logging off", "image rebuilt with logrotate, volume cleaned"),
        "When did the worker volume hit ENOSPC, no space left on device?", "Tell me about the debug logs that filled the disk because log rotation was missing.",
        "When did a machine's storage run out so that processing stalled?",
        "Which breakdown arose because verbose diagnostics were never pruned and swamped the drive?",
    ),
    Story(
        "clock-skew", ("auth", "session-store"), "token_rejections_per_min", "1400", "10",
        "Token validation failures",
        ("token validation failures at 12%: 'token used before issued' errors from two nodes",
         "JWT checks failing with 'token used before issued' on two hosts, about 12% of logins"),
        ("NTP daemon dead on two hosts after the kernel patch; clocks drifted 90 s",
         "chronyd never restarted after the kernel patch on two nodes, their clocks were 90 seconds off"),
        "config",
        ("re-enabled chrony on all nodes and added a drift alert", "chrony back on, drift alert at 2 s"),
        "When were there 'token used before issued' errors?", 'What about the NTP daemon dying after the kernel patch?',
        "When were sign-ins refused as credentials appeared to come from the future?",
        "Which outage came from machines disagreeing about what time it was?",
        ("ntp.enabled", "false", "true"),
    ),
    Story(
        "cache-stampede", ("user-profile", "recommendations", "inventory"), "db_cpu_pct", "100", "35",
        "Database CPU pinned",
        ("DB CPU pinned at 100% for 7 minutes, read replicas lagging 45 s",
         "primary database at full CPU, replica lag 45 seconds, p99 tripled"),
        ("cache keys all expired at once after the redis flush, every request went to the database (stampede)",
         "a redis flush made all keys expire together; the resulting stampede sent each request to the database"),
        "config",
        ("added TTL jitter and request coalescing to the cache", "cache TTLs now jittered, coalescing on"),
        "When was DB CPU pinned at 100% with replicas lagging?", "Tell me about the cache stampede after the redis flush.",
        "When was the main data store maxed out with its copies falling behind?",
        "Which slowdown came from all memoized entries vanishing simultaneously so reads hit storage directly?",
        ("cache.ttl_jitter_pct", "0", "20"),
    ),
    Story(
        "flag-full-rollout", ("checkout", "feature-flags"), "conversion_pct", "2.1", "3.0",
        "Conversion drop in EU",
        ("conversion dropped 30% in EU, cart page returning empty shipping options",
         "EU cart shows no shipping options, conversion down by about a third"),
        ("new_shipping_calc flag enabled for 100% instead of 5%: percentage field read as a fraction",
         "the new_shipping_calc flag went to all users, its 5 percent was read as 5.0 (i.e. 500%)"),
        "config",
        ("new_shipping_calc back to 5% and the percentage field validated", "flag rollout reverted to 5 percent"),
        "When did EU conversion drop with empty shipping options?", "Who found the new_shipping_calc percentage read as a fraction?",
        "When did European shoppers stop seeing delivery choices?",
        "Which outage came from a toggle meant for a small slice being switched on for everyone?",
        ("new_shipping_calc.rollout", "100", "5"),
    ),
    Story(
        "migration-lock", ("ledger", "inventory", "order-router"), "blocked_writes", "2300", "0",
        "Writes blocked on orders table",
        ("writes to the orders table blocked, 2,300 requests queued",
         "orders table not accepting writes for 11 minutes, request queue at 2300"),
        ("migration added a NOT NULL column with a default on a 90M-row table, holding an exclusive lock for 11 minutes",
         "schema migration rewrote the 90M-row orders table under an exclusive lock (NOT NULL column with default)"),
        "rollback",
        ("rolled back to the build before migration 0412", "migration 0412 reverted with its release"),
        "When were writes to the orders table blocked with requests queued?", "Tell me about the migration that added a NOT NULL column with a default under an exclusive lock.",
        "When could nothing be saved into the purchases records for quite a while?",
        "Which outage came from altering a huge dataset in a way that froze it?",
    ),
    Story(
        "retry-storm", ("notifications", "fraud-scorer"), "outbound_qps", "9100", "600",
        "Outbound QPS to SMS provider",
        ("outbound QPS to the SMS provider 15x normal; provider started returning 429s",
         "SMS provider rate-limiting our traffic (429) after outbound QPS went to 15 times normal"),
        ("client retried on 429 without backoff or jitter, multiplying load after a brief provider blip",
         "retry loop with no backoff: each 429 triggered immediate retries, amplifying a short provider blip"),
        "hotfix",
        ("hotfix: exponential backoff with jitter on 429", "retries now back off exponentially"),
        "When did outbound QPS to the SMS provider hit 15x with 429s?", "What was the retry on 429 without backoff about?",
        "When did we hammer the text-message vendor until it throttled us?",
        "Which incident came from failed calls being repeated instantly with no waiting?",
    ),
    Story(
        "gc-humongous", ("search-indexer", "fraud-scorer"), "gc_pause_ms", "5200", "120",
        "Long GC pauses",
        ("stop-the-world GC pauses of 4-6 s, indexing throughput down 70%",
         "G1 pauses up to 6 seconds; documents indexed per minute fell by 70%"),
        ("heap at 31g with the default G1 region size; the bulk loader added last sprint allocates humongous objects",
         "bulk loader from last sprint allocates humongous arrays, which G1 with default regions handles badly"),
        "config",
        ("G1 region size raised to 32m", "set -XX:G1HeapRegionSize=32m on the indexers"),
        "When did we see stop-the-world GC pauses of 4-6 s?", "Tell me about the bulk loader allocating humongous objects under G1.",
        "When did the JVM keep freezing, hurting ingestion badly?",
        "Which slowdown came from huge memory grabs by a recently introduced batch importer?",
        ("jvm.g1_region_size", "default", "32m"),
    ),
    Story(
        "vary-cookie", ("media-transcoder", "api-gateway"), "origin_egress_gbps", "14", "4.5",
        "Origin egress tripled",
        ("origin egress tripled, CDN cache hit ratio fell from 94% to 31%",
         "CDN hit ratio down to 31% (was 94%), origin bandwidth 3x"),
        ("a Vary: Cookie header added by the new middleware made every response uncacheable at the CDN",
         "new middleware sets Vary: Cookie on all responses, so the CDN stopped caching them"),
        "rollback",
        ("rolling back the middleware release", "reverted to the build without the Vary header"),
        "When did the CDN cache hit ratio fall to 31%?", "Tell me about the Vary: Cookie header from the new middleware.",
        "When did far more traffic than usual have to be served from our own machines?",
        "Which slowdown came from one extra HTTP field that left the content delivery layer unable to keep copies?",
    ),
    Story(
        "ratelimit-nat", ("api-gateway",), "http_429_ratio", "18%", "0.2%",
        "Mobile API calls rejected",
        ("legit traffic getting 429 from the gateway, about 18% of mobile API calls rejected",
         "18% of mobile API calls rejected with 429 by the rate limiter"),
        ("rate limit keyed on client IP while all mobile traffic comes through the carrier NAT",
         "limiter buckets by source IP, and the carrier NAT puts thousands of phones behind one IP"),
        "config",
        ("rate limit now keyed on API token", "limiter switched from IP to token buckets"),
        "When were mobile API calls rejected with 429?", "What about the rate limit keyed on client IP behind the carrier NAT?",
        "When were phone app users turned away in large numbers?",
        "Which outage came from counting quota per network address although whole crowds share it?",
        ("ratelimit.key", "client_ip", "api_token"),
    ),
    Story(
        "rebalance-loop", ("billing-worker", "notifications"), "consumer_lag_msgs", "1200000", "2000",
        "Consumer lag on invoices",
        ("consumer lag on the invoices topic at 1.2M messages and growing",
         "invoice consumers 1.2 million messages behind, lag still rising"),
        ("consumer group rebalanced in a loop because max.poll.interval was shorter than the batch processing time",
         "max.poll.interval below batch duration, so consumers were kicked out and the group rebalanced endlessly"),
        "config",
        ("max.poll.interval raised to 10 minutes", "poll interval now 600 s, batches smaller"),
        "When did consumer lag on the invoices topic reach 1.2M?", "Tell me about the consumer group rebalancing in a loop over max.poll.interval.",
        "When did a huge pile of unread items keep getting bigger?",
        "Which outage came from readers being evicted repeatedly since each chunk took longer than allowed?",
        ("consumer.max_poll_interval_ms", "120000", "600000"),
    ),
    Story(
        "carrier-key", ("shipping-quotes",), "carrier_api_errors_pct", "100", "0.5",
        "Carrier rate lookups failing",
        ("all carrier rate lookups failing with 401, falling back to flat-rate shipping",
         "every carrier rate request returns 401 unauthorized; flat-rate fallback in use"),
        ("the carrier API key was rotated by the vendor and the new secret never reached our vault",
         "vendor rotated the carrier API key; the replacement secret was never synced to our vault"),
        "config",
        ("new carrier key stored and rotation webhook subscribed", "secret updated, rotation notices now alert us"),
        "When did carrier rate lookups fail with 401?", "Who reported the carrier API key rotated by the vendor?",
        "When could we not get delivery prices from partners?",
        "Which outage came from a partner changing our access credential without us updating it?",
        ("carrier.api_key_ref", "v12", "v13"),
    ),
    Story(
        "noisy-etl", ("fraud-scorer", "recommendations"), "p95_latency_ms", "880", "210",
        "Model scoring slow",
        ("model scoring latency p95 up 4x on nodes shared with the batch ETL",
         "p95 of scoring requests 4 times higher on the nodes where the ETL batch runs"),
        ("ETL job scheduled without CPU limits onto the same node pool, starving the scorer",
         "nightly ETL had no CPU limits and landed in the scorer node pool, starving it"),
        "config",
        ("ETL moved to its own node pool with CPU limits", "taints keep the ETL off the scorer nodes"),
        "When was model scoring latency up 4x on nodes shared with the ETL?", "Tell me about the ETL job without CPU limits starving the scorer.",
        "When did predictions get much slower on hosts busy with overnight data processing?",
        "Which slowdown came from a bulk data pipeline hogging processors beside it?",
        ("etl.node_pool", "shared", "etl-dedicated"),
    ),
    Story(
        "wrong-region-failover", ("session-store", "auth"), "forced_logouts_per_min", "950", "3",
        "Forced logouts in ap-southeast",
        ("sessions dropped for users in ap-southeast; forced logouts",
         "ap-southeast users being logged out en masse, sessions lost"),
        ("failover script promoted a replica in the wrong region, which had stale data",
         "the failover promoted the us-west replica (stale by hours) instead of the local one"),
        "hotfix",
        ("hotfix: failover script pins the region", "failover now refuses a cross-region promotion"),
        "When were sessions dropped for users in ap-southeast?", "What about the failover that promoted a replica in the wrong region?",
        "When were Asian customers suddenly signed out?",
        "Which outage came from switching over to an out-of-date copy located on another continent?",
    ),
    Story(
        "fd-leak", ("order-router", "api-gateway"), "open_fds", "65536", "4000",
        "Too many open files",
        ("too many open files errors; accept() failing on 3 of 8 pods",
         "EMFILE (too many open files) on three pods, they stopped accepting connections"),
        ("HTTP client responses never closed in the webhook path, leaking sockets until the fd limit",
         "webhook handler leaked sockets: response bodies were never closed, fd limit reached after hours"),
        "rollback",
        ("rolling back the webhook refactor", "back to the previous build, webhook leak in the new one"),
        "When did we get too many open files errors with accept failing?", "Tell me about HTTP client responses never closed in the webhook path.",
        "When did some instances refuse new inbound traffic after exhausting their descriptors?",
        "Which outage came from outgoing network handles that were opened and then forgotten?",
    ),
    Story(
        "smtp-typo", ("notifications", "billing-worker"), "email_delivery_pct", "62", "99.5",
        "Email delivery down",
        ("email send success rate down to 62%",
         "only 62% of emails accepted by the relay, bounces piling up"),
        ("SMTP relay hostname typo in the config push (smtp-relay.interal)",
         "config push pointed at smtp-relay.interal, a misspelt relay host"),
        "config",
        ("relay hostname corrected to smtp-relay.internal", "fixed the relay host typo"),
        "When was the email send success rate down to 62%?", "Who found the typo in the SMTP relay hostname in the config push?",
        "When did lots of outgoing mail fail to arrive?",
        "Which failure came from a misspelled mail server address?",
        ("smtp.relay_host", "smtp-relay.interal", "smtp-relay.internal"),
    ),
    Story(
        "index-dropped", ("search-indexer", "inventory"), "search_p99_ms", "3000", "90",
        "Search p99 at 3 s",
        ("search query p99 from 90 ms to 3 s, DB sequential scans spiking",
         "search p99 at 3 seconds (was 90 ms), sequential scans on the sku table"),
        ("the migration dropped the composite index on (tenant_id, sku) and the recreate step was skipped",
         "composite index (tenant_id, sku) lost in the migration; its recreate step never ran"),
        "hotfix",
        ("hotfix: recreate the (tenant_id, sku) index concurrently", "index rebuilt concurrently"),
        "When did search p99 go up to 3 s with sequential scans?", "Tell me about the migration that dropped the composite index on tenant_id and sku.",
        "When did looking up items in the catalogue become painfully sluggish?",
        "Which slowdown came from a table losing its lookup structure without anyone rebuilding it?",
    ),
    Story(
        "hpa-metric", ("checkout", "api-gateway"), "cpu_pct", "95", "40",
        "Pods stuck at min replicas",
        ("pods stuck at min replicas during peak; CPU 95%, error rate 3%",
         "no scale-up at peak: replicas at minimum, CPU at 95% and 3% errors"),
        ("HPA target referenced a metric renamed in the Prometheus upgrade, so scaling never triggered",
         "the autoscaler watched a Prometheus series that the upgrade renamed; it saw no data and never scaled"),
        "config",
        ("HPA pointed at the renamed series", "autoscaler metric name updated"),
        "When were pods stuck at min replicas during peak?", "What about the HPA metric renamed in the Prometheus upgrade?",
        "When did the fleet fail to grow despite heavy load?",
        "Which incident came from automatic capacity growth tracking a measurement that no longer existed?",
        ("hpa.target_series", "http_requests_total", "http_server_requests_total"),
    ),
    Story(
        "psp-outage", ("payments",), "card_auth_failure_pct", "22", "1.5",
        "Card authorisations failing",
        ("card authorisations failing 22% with gateway timeout from the PSP",
         "22% of card auths time out at the PSP"),
        ("PSP had a regional outage; our circuit breaker was not configured for the secondary acquirer",
         "upstream PSP outage in one region and no failover to the secondary acquirer configured"),
        "config",
        ("secondary acquirer enabled in the circuit breaker", "breaker now fails over to the secondary acquirer"),
        "When were card authorisations failing with PSP timeouts?", "Tell me about the PSP outage with no secondary acquirer configured.",
        "When did many shoppers have their purchases declined?",
        "Which failure came from an external processor going down with no backup route set up?",
        ("psp.secondary_acquirer", "disabled", "enabled"),
    ),
    Story(
        "emoji-encoder", ("user-profile", "notifications"), "http_500_ratio", "5%", "0.05%",
        "500s on profile reads",
        ("profile reads returning 500 for about 5% of accounts",
         "5% of profile reads fail with HTTP 500"),
        ("accounts with emoji in display names broke the new UTF-8 encoder",
         "emoji in display names crash the UTF-8 encoder introduced this week"),
        "rollback",
        ("rolling back the encoder change", "reverted the UTF-8 encoder release"),
        "When were profile reads returning HTTP 500?", "What about emoji in display names breaking the UTF-8 encoder?",
        "When did some people's personal pages error out?",
        "Which bug came from special characters in nicknames breaking a text converter?",
    ),
    Story(
        "cron-twice", ("billing-worker", "ledger"), "duplicate_invoices", "1400", "0",
        "Duplicate invoices",
        ("duplicate invoices sent to 1,400 customers",
         "1400 customers received the same invoice twice"),
        ("the scheduler ran the monthly job twice after the leader election flapped",
         "leader election flapped and both schedulers ran the monthly invoicing job"),
        "hotfix",
        ("hotfix: idempotency key on the monthly job", "monthly job now idempotent per account and period"),
        "When were duplicate invoices sent to 1,400 customers?", "Tell me about the scheduler running the monthly job twice after the leader election flapped.",
        "When did clients get charged two times for one period?",
        "Which problem came from a periodic task firing two times when coordinator selection wobbled?",
    ),
)

# Reasons of rollbacks that no root cause explains, and of minor incidents.
ROLLBACK_REASONS: tuple[str, ...] = (
    "error budget burning after the release", "canary failed health checks, reverting",
    "smoke tests red after deploy", "customer reports of broken pages, rolling back to be safe",
    "memory creeping up on the new pods", "p95 regression vs previous build",
    "release shipped with debug logging on", "dependency conflict crashed two pods on start",
    "readiness probe flapping on the new version", "5xx ratio above SLO for 10 minutes after rollout",
    "rolled back by on-call: elevated error rate, cause unknown yet", "bad feature flag default in this build",
    "startup time doubled, pods failing liveness", "reverting, the release notes missed a breaking API change",
    "saw panics in the new handler, going back",
)  # fmt: skip

# Anomalies that resolve on their own or lead to a plain rollback: (metric, value, baseline, summary wordings).
LONE_ANOMALIES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("cpu_pct", "92", "45", ("CPU at 92% on 3 of 12 pods for 10 minutes, recovered without action",
                             "short CPU saturation on a few pods, back to normal after 10 min")),
    ("http_5xx_ratio", "1.2%", "0.2%", ("brief 5xx blip of 1.2% for two minutes during node rotation",
                                        "5xx blip while nodes rotated, cleared by itself")),
    ("queue_depth", "40000", "500", ("queue depth spiked to 40k during the batch import, drained in 15 min",
                                     "backlog of 40k jobs after the import, drained within a quarter hour")),
    ("p95_latency_ms", "650", "480", ("p95 up 30% after a traffic burst from the marketing email",
                                      "latency bump of about 30% during the newsletter traffic peak")),
    ("disk_used_pct", "85", "60", ("log volume at 85%, trending up slowly", "disk usage 85% on the log volume")),
    ("synthetic_failures", "2", "0", ("synthetic check failed twice from the eu-west probe, then passed",
                                      "two failed synthetic probes from eu-west, not reproducible")),
    ("error_rate_pct", "2.4", "0.4", ("error rate 2.4% right after rollout, above the 1% guardrail",
                                      "post-deploy error rate of 2.4%, guardrail is 1%")),
    ("pod_restarts", "14", "0", ("14 pod restarts in an hour, CrashLoopBackOff on the new replica set",
                                 "new replica set crash-looping, 14 restarts")),
    ("memory_rss_mb", "3100", "2200", ("memory 40% above yesterday at the same traffic",
                                       "RSS 3.1 GB vs 2.2 GB baseline at similar load")),
    ("replica_lag_s", "30", "1", ("read replica lag reached 30 s during vacuum", "replica 30 seconds behind while vacuum ran")),
    ("cache_hit_pct", "71", "93", ("cache hit ratio dipped to 71% after deploy warmup", "hit ratio 71% until caches warmed up")),
    ("gc_pause_ms", "900", "150", ("GC pauses near 900 ms at peak", "longer GC pauses than usual under peak load")),
)  # fmt: skip

# Deploy changes: (summary text, a shared-word question about that deploy, or "" when too generic to ask).
DEPLOY_CHANGES: tuple[tuple[str, str], ...] = (
    ("bumped protobuf to 4.25", "Tell me about the protobuf 4.25 bump on {service}"),
    ("new retry policy for upstream calls", ""),
    ("removed the legacy v1 endpoints", "When were the legacy v1 endpoints removed from {service}?"),
    ("structured JSON logging", ""),
    ("OpenTelemetry spans on the DB layer", "When did {service} get OpenTelemetry spans on the DB layer?"),
    ("Go 1.23 toolchain", ""),
    ("pagination for the admin list endpoints", "When did the admin list pagination ship for {service}?"),
    ("dependency updates", ""),
    ("gRPC keepalive tuned to 30s", "When was the gRPC keepalive tuned to 30s on {service}?"),
    ("copy fixes", ""),
    ("Argon2 for new password hashes", "When did {service} switch new password hashes to Argon2?"),
    ("batching for outbound webhooks", "Tell me about outbound webhook batching in {service}"),
    ("minor fixes", ""),
    ("Postgres driver 3.2 with pipelining", "When did {service} get the Postgres driver 3.2 with pipelining?"),
    ("circuit breaker on the recommendations client", ""),
    ("new pricing rules for bundles", "When were the bundle pricing rules deployed on {service}?"),
    ("health endpoint returns build info", ""),
    ("read-through cache for tenant settings", "When did the tenant settings read-through cache go out for {service}?"),
    ("refactor of the request router", ""),
    ("ARM64 images", "When did {service} start shipping ARM64 images?"),
    ("rate limiter metrics", ""),
    ("idempotency keys on POST /orders", "When did idempotency keys on POST /orders go out on {service}?"),
    ("security patches", ""),
    ("Brotli compression for JSON responses", "When was Brotli compression for JSON responses deployed on {service}?"),
    ("feature flag cleanup", ""),
    ("SAML login for enterprise tenants", "When did {service} ship SAML login for enterprise tenants?"),
    ("faster cold start via lazy imports", "Tell me about the lazy imports cold start change for {service}"),
    ("small UI tweaks", ""),
    ("Redis 7 client with RESP3", "When did {service} move to the Redis 7 client with RESP3?"),
    ("translation updates (de, fr, ja)", ""),
)

DEPLOY_TEMPLATES: tuple[str, ...] = (
    "Rolled out {version} to {env}: {change}",
    "{version} is live in {env} ({change})",
    "{change}; shipped as {version}",
    "deployed {service}@{version}: {change}",
    "Release {version}: {change}",
    "{env} now on {version}. Changes: {change}",
    "canary clean, promoting {version} to {env}: {change}",
    "Shipping {version} ({change})",
)

# Flaky tests: (service, test id, owner team).
TESTS: tuple[tuple[str, str], ...] = (
    ("payments", "tests/payments/test_refunds.py::test_partial_refund_idempotent"),
    ("payments", "tests/payments/test_webhooks.py::test_psp_webhook_signature"),
    ("checkout", "tests/checkout/test_cart.py::test_apply_coupon_twice"),
    ("checkout", "tests/checkout/test_cart.py::test_cart_merge_on_login"),
    ("auth", "tests/auth/test_tokens.py::test_refresh_rotation"),
    ("auth", "tests/auth/test_sso.py::test_saml_assertion_clock"),
    ("inventory", "tests/inventory/test_reservations.py::test_concurrent_reserve"),
    ("inventory", "tests/inventory/test_sync.py::test_warehouse_sync_retry"),
    ("search-indexer", "tests/search/test_bulk.py::test_bulk_reindex_order"),
    ("search-indexer", "tests/search/test_query.py::test_fuzzy_match_threshold"),
    ("notifications", "tests/notify/test_email.py::test_template_render_locale"),
    ("notifications", "tests/notify/test_sms.py::test_sms_retry_backoff"),
    ("ledger", "tests/ledger/test_balance.py::test_balance_after_reversal"),
    ("ledger", "tests/ledger/test_export.py::test_csv_export_timezone"),
    ("user-profile", "tests/profile/test_avatar.py::test_avatar_resize_async"),
    ("order-router", "tests/router/test_routing.py::test_split_shipment"),
    ("order-router", "tests/router/test_routing.py::test_fallback_carrier"),
    ("api-gateway", "tests/gateway/test_limits.py::test_burst_limit"),
    ("api-gateway", "tests/gateway/test_proxy.py::test_streaming_upload"),
    ("billing-worker", "tests/billing/test_invoices.py::test_invoice_pdf_render"),
    ("billing-worker", "tests/billing/test_dunning.py::test_dunning_schedule"),
    ("fraud-scorer", "tests/fraud/test_model.py::test_score_deterministic"),
    ("recommendations", "tests/recs/test_ranker.py::test_ranker_cold_start"),
    ("media-transcoder", "tests/media/test_transcode.py::test_hls_segments"),
    ("session-store", "tests/sessions/test_expiry.py::test_sliding_expiry"),
    ("shipping-quotes", "tests/shipping/test_quotes.py::test_quote_cache_ttl"),
    ("feature-flags", "tests/flags/test_eval.py::test_percentage_rollout_bucket"),
    ("edge-proxy", "tests/edge/test_headers.py::test_hsts_on_redirect"),
    ("checkout", "e2e/checkout.spec.ts::guest checkout with saved address"),
    ("user-profile", "e2e/profile.spec.ts::change email confirmation"),
)  # fmt: skip

FLAKY_REASONS: tuple[str, ...] = (
    "timed out waiting for the sandbox webhook", "dict ordering differs under pytest-xdist",
    "port 8080 already in use on the shared runner", "assertion on wall-clock time off by one second",
    "race between cache warmup and the first request", "intermittent DNS failure inside the CI container",
    "fixture leaks a temp dir between tests", "depends on another test having created the user",
    "random seed not pinned in the data generator", "element not yet clickable when the click fires",
    "network mock returns 503 now and then", "timezone of the runner differs from the expected one",
    "flaky ordering of async callbacks", "S3 stub eventually consistent listing",
)  # fmt: skip

QUARANTINE_REASONS: tuple[str, ...] = (
    "flaked {n} times in {days} days; quarantined until {team} fixes it",
    "quarantined after {n} flaky runs, tracking in {ticket}",
    "moved to the quarantine suite: {n} intermittent failures, owner {team}",
    "{n} flakes since last week; excluded from the merge gate ({ticket})",
)

CONFIG_CHANGES: tuple[tuple[str, str, str, str, str], ...] = (
    ("api-gateway", "upstream_timeout_ms", "3000", "5000", "slow partner endpoints during peak"),
    ("checkout", "cart_ttl_hours", "24", "72", "product asked for longer-lived carts"),
    ("payments", "psp.retry_attempts", "2", "3", "transient PSP errors"),
    ("auth", "session.max_age_days", "30", "14", "security review"),
    ("search-indexer", "bulk.batch_size", "500", "2000", "faster nightly reindex"),
    ("billing-worker", "workers", "8", "12", "month-end load"),
    ("inventory", "reservation_ttl_s", "900", "600", "stock held too long by abandoned carts"),
    ("notifications", "sms.provider", "twilio-eu", "twilio-us", "EU provider maintenance window"),
    ("user-profile", "avatar.max_mb", "5", "10", "support tickets about large photos"),
    ("ledger", "export.timezone", "UTC", "tenant", "finance wants local-time exports"),
    ("recommendations", "model.version", "r41", "r42", "weekly model refresh"),
    ("media-transcoder", "ffmpeg.threads", "4", "8", "bigger nodes"),
    ("edge-proxy", "hsts.max_age", "86400", "31536000", "HSTS preload submission"),
    ("order-router", "split_shipments", "false", "true", "launch of split shipments"),
    ("fraud-scorer", "threshold", "0.82", "0.78", "too many false negatives last week"),
    ("session-store", "redis.maxmemory_policy", "noeviction", "allkeys-lru", "memory pressure at night"),
    ("shipping-quotes", "cache_ttl_s", "300", "900", "carrier API quota"),
    ("feature-flags", "sdk.poll_interval_s", "30", "10", "faster kill switch"),
    ("api-gateway", "cors.allowed_origins", "app.example.com", "app.example.com,admin.example.com", "new admin console"),
    ("payments", "3ds.required_above_eur", "250", "150", "issuer rules changed"),
    ("checkout", "address.autocomplete", "off", "on", "A/B test won"),
    ("auth", "mfa.enforced_roles", "admin", "admin,finance", "audit finding"),
    ("notifications", "email.batch_size", "100", "500", "newsletter volume"),
    ("inventory", "sync.interval_s", "300", "120", "stock drift complaints"),
    ("billing-worker", "dunning.retry_days", "3,7", "1,3,7", "recover more failed payments"),
)  # fmt: skip

CONFIG_TEMPLATES: tuple[str, ...] = (
    "{key}: {old} -> {new} ({why})",
    "set {key} to {new} (was {old}): {why}",
    "changed {key} from {old} to {new} because of {why}",
    "{why}; {key} now {new}",
)

RESOLVED_TEMPLATES: tuple[str, ...] = (
    "mitigated by {remedy}; postmortem scheduled", "resolved after {remedy}, monitoring for an hour",
    "all clear: {remedy} fixed it", "closed, {remedy}; follow-ups filed",
)

# Questions about things that never happened: (question, words no report may contain).
ABSENT_TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("When did the Kafka brokers lose quorum?", ("kafka", "brokers", "quorum")),
    ("Why did the mainframe batch window overrun?", ("mainframe", "overrun")),
    ("Did the App Store review block our iOS build?", ("ios",)),
    ("What went wrong with the GraphQL federation layer?", ("graphql", "federation")),
    ("Did the Elasticsearch cluster go yellow at any point?", ("elasticsearch", "yellow")),
    ("Why did the training job run out of GPU memory?", ("gpu", "training")),
    ("Who rotated the SSH host keys?", ("ssh",)),
    ("When did the VPN concentrator fail over?", ("vpn", "concentrator")),
    ("What broke Android push delivery?", ("android",)),
    ("Why was the Snowflake export late?", ("snowflake",)),
    ("When did the Terraform state lock get stuck?", ("terraform",)),
    ("Did the nightly backup to Glacier fail?", ("glacier", "backup")),
    ("When did the LDAP sync break?", ("ldap",)),
    ("Why did websocket connections drop in Brazil?", ("websocket", "brazil")),
    ("What happened during the CRM blue-green cutover?", ("crm", "cutover")),
    ("Did anyone see packet loss on the Frankfurt uplink?", ("frankfurt", "uplink", "packet")),
)

ABSENT_SERVICES: tuple[str, ...] = ("geo-router", "loyalty-points", "tax-engine")
ABSENT_HANDLES: tuple[str, ...] = ("backup-agent", "chaos-monkey", "cost-watcher")
