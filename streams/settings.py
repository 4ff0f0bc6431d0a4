"""One settings object for the whole process, read from ``HEALTHMON_*`` environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TopicNames(BaseModel):
    """Kafka topic names; ``Settings.topic_prefix`` is put in front of each one."""

    accounts: str = "cs.accounts"
    usage: str = "cs.usage"
    tickets: str = "cs.tickets"
    billing: str = "cs.billing"
    surveys: str = "cs.surveys"
    health: str = "cs.health"
    health_changes: str = "cs.health.changes"
    alerts: str = "cs.alerts"
    deadletter: str = "cs.deadletter"
    alerts_deadletter: str = "cs.alerts.deadletter"
    portfolio: str = "cs.portfolio"
    #: Snapshots of `healthmon shadow` (a new scorecard tried on the history); never read by the worker.
    health_shadow: str = "cs.health.shadow"
    #: Playbook tasks (streams/tasks, `healthmon tasks-worker`): people's actions in (co-partitioned with
    #: the inputs, key: account id), each account's task book out (compacted), reminders/escalations out.
    task_actions: str = "cs.task-actions"
    tasks: str = "cs.tasks"
    task_notices: str = "cs.task-notices"
    #: Scorecards in force over event time (docs/promotion.md): proposals, promotions, rollbacks.
    #: Compacted, one partition (one order), one key per decision; the worker follows it.
    scorecards: str = "cs.scorecards"


ENV_PREFIX = "HEALTHMON_"


class Settings(BaseSettings):
    """Runtime configuration. Nested fields use ``__``: ``HEALTHMON_TOPICS__USAGE=my.usage``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore")

    app_id: str = "healthmon"
    broker: str = "kafka://127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    topic_prefix: str = ""
    topics: TopicNames = Field(default_factory=TopicNames)
    partitions: int = Field(default=8, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    store: str = Field(default="memory://", pattern=r"^(memory|rocksdb)://")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # Compression of what healthmon produces (state changelogs, snapshots, alerts, replays). lz4 costs
    # ~20 us per 7 KB state and stores it in ~4 KB; zstd ~50 us for ~2.6 KB (see the benchmark).
    compression: Literal["none", "gzip", "lz4", "zstd"] = "lz4"
    data_dir: str = ".local/faust"
    # A worker that dies without leaving the group holds its partitions this long (Kafka's
    # session timeout; at least the broker's group.min.session.timeout.ms, 6 s by default).
    session_timeout_s: float = Field(default=30.0, ge=6.0)
    web_enabled: bool = False
    web_port: int = 6066
    # Faust's web server and the /metrics endpoint listen on loopback unless told otherwise
    # (0.0.0.0 in a container, behind the container's own port mapping).
    web_bind: str = "127.0.0.1"
    metrics_bind: str = "127.0.0.1"
    # Kafka security, for Faust and every aiokafka client alike (streams/broker/clients.py).
    # Redis takes its password and TLS in redis_url: redis://:PASSWORD@host:6379/0, or
    # rediss://:PASSWORD@host:6380/0?ssl_ca_certs=/path/ca.pem for TLS.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None  # default: the system's trusted CAs
    kafka_ssl_certfile: Path | None = None  # client certificate (mutual TLS)
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    log_level: str = "info"
    # Ingest batching: at most this many events, or whatever arrived within batch_wait_s.
    batch_max: int = Field(default=500, ge=1)
    batch_wait_s: float = Field(default=0.05, gt=0)
    # How many recent event ids per account are remembered for de-duplication.
    dedupe_window: int = Field(default=64, ge=0, le=4096)
    # Users remembered per account (their activity bitmaps): past it the least recently active user
    # is forgotten, and distinct-user metrics count at most this many (docs/processing.md). Each
    # costs ~225 B of memory and 11-30 B of the changelog record (more for long random ids): at the
    # upper bound a record stays well under Kafka's default 1 MB message limit.
    max_users_per_account: int = Field(default=5_000, ge=1, le=20_000)
    # The account-state layout written to the changelog: during a rolling upgrade, the newest the old
    # release reads (1, 2 or 3; docs/deploy.md), 4 once every worker reads 4. All are always read.
    state_format: int = Field(default=4, ge=1, le=4)
    # An event this far ahead of the wall clock is rejected: it would age every account on its partition.
    max_future_skew_s: float = Field(default=3600.0, ge=0)
    # The scorecard YAML (default: the one shipped in streams/core/scorecard.default.yaml).
    scorecard: Path | None = None
    # Targets and benchmarks of the portfolio figures (default: streams/core/targets.default.yaml).
    targets_file: Path | None = None
    # Gross margin (0-1] used in customer lifetime value = ARPA x gross margin / monthly revenue churn.
    gross_margin: float = Field(default=1.0, gt=0, le=1)
    # Trigger rules: a file or a folder of *.yaml (default: the shipped pack in rules/default).
    rules: Path | None = None
    # How often rule files are checked for changes (a change reloads them; ids keep their state).
    rules_reload_s: float = Field(default=10.0, gt=0)
    # Engine time: "live" also moves with the wall clock (silent accounts age in real time);
    # "event" moves only with event time (replaying history fires what live would have fired).
    clock: Literal["live", "event"] = "live"
    # How often the worker advances time without input (live mode: the wall clock's pace).
    tick_s: float = Field(default=0.05, gt=0)
    # Evaluations (and states read to freeze the daily portfolio) one step of a partition may run
    # before the worker's event loop gets its turn; the rest follows in the next steps. At a UTC
    # midnight every account is due: without a bound, a partition of 12.5k accounts held the loop
    # for up to 6 s, one of 125k for over a minute.
    step_budget: int = Field(default=500, ge=1)
    # How long changed account states may be held before they are written to the changelog (and
    # the input records that changed them acknowledged): an account changed in many steps within it
    # is encoded and written once. Snapshots and alerts go out at once regardless. 0: every step.
    state_flush_s: float = Field(default=0.5, ge=0)
    # Event time is released past an idle topic only after it has been seen for this long
    # (lets stragglers of a producer writing several topics in); see docs/processing.md.
    watermark_hold_s: float = Field(default=2.0, ge=0)
    # An account's events within one slot of event time share one evaluation (at the latest).
    eval_slot_s: float = Field(default=3600.0, gt=0)
    # Live mode, once the stream is within live_within_s of the wall clock: the slot and the
    # lateness allowed before the wall clock releases time past idle topics.
    live_within_s: float = Field(default=60.0, gt=0)
    live_slot_ms: int = Field(default=50, ge=1)
    live_lateness_ms: int = Field(default=50, ge=0)
    # A topic with unread records that delivers none for this long stops holding time back.
    max_block_s: float = Field(default=30.0, gt=0)
    # The worker freezes its heap this often, so the cyclic collector's pauses stop growing with
    # the book (they sat on the live p99), and collects it whole every gc_full_s (cyclic garbage
    # made before a freeze); 0 turns either off. streams/worker/heap.py.
    gc_freeze_s: float = Field(default=5.0, ge=0)
    gc_full_s: float = Field(default=3600.0, ge=0)
    # Records waiting in one partition's merge before the earliest is released regardless.
    max_buffered: int = Field(default=100_000, ge=100)
    # Accepted event-time range (older events are dead-lettered) and record size.
    max_event_age_days: float = Field(default=3650.0, gt=0)
    max_record_bytes: int = Field(default=256 * 1024, ge=1024)
    # Alert delivery (healthmon deliver): routing file, SMTP, metrics.
    routing: Path | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0: no /metrics endpoint
    retry_max_delay_s: float = Field(default=300.0, gt=0)
    # The Redis read model for dashboards. `healthmon readmodel` keeps it in a process of its own;
    # readmodel_enabled also runs it inside each worker: off by default, since every snapshot parsed
    # and written to Redis on the scoring loop costs live latency (README, "Read model").
    redis_prefix: str = "healthmon:"
    readmodel_enabled: bool = False
    # Portfolio figures (cs.portfolio, Redis) are recomputed at most this often while snapshots arrive.
    portfolio_interval_s: float = Field(default=1.0, gt=0)
    # Days of daily score history per account kept in the read model (the dashboard's trend).
    history_days: int = Field(default=120, ge=90)
    # The rolling window of the live score accuracy (GET /api/accuracy): cancellations of these many days,
    # scored 30 and 60 days before; the read model keeps a compact score line of window + 60 days.
    accuracy_window_days: int = Field(default=180, ge=30, le=730)
    # `healthmon calibrate --propose`: the fewest cancelling accounts before a candidate card is proposed.
    calibration_min_cancellations: int = Field(default=30, ge=1)
    # Promotion of a proposed card (docs/promotion.md): "manual", a person accepts it (API, dashboard);
    # "auto", `healthmon calibrate --propose --publish` accepts what the verdict proposes, at once.
    card_promotion: Literal["manual", "auto"] = "manual"
    # `healthmon serve`: the HTTP API and dashboard. Every route but /healthz and /readyz needs
    # `Authorization: Bearer <api_token>` (or ?token= for the page and its event stream) when a token is set.
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(default=8080, ge=0, le=65535)
    api_token: SecretStr | None = None
    # Playbook tasks (`healthmon tasks-worker`): how often live mode looks for deadlines that have come
    # (each one is then written to cs.task-actions as a tick, so it is in the log like a person's action),
    # the time zone of `same_day` deadlines for accounts without one of their own (UTC when unset), and
    # the rules whose firing means the account cancelled (its open tasks close as "account cancelled").
    tasks_tick_s: float = Field(default=1.0, gt=0)
    # How often the task worker commits its input offsets (Faust's commit interval); the books are in
    # cs.tasks before, and an action redelivered after a crash is recognised by its id.
    tasks_commit_interval_s: float = Field(default=2.8, gt=0)
    tasks_time_zone: str | None = None
    tasks_cancel_rules: list[str] = Field(default_factory=lambda: ["account_canceled"])
    # One-click task links in mail (`/t/<token>` on `healthmon serve`): signed with this secret (links are
    # off without it), valid this long, each usable once; public_url is where people reach `healthmon serve`.
    task_link_secret: SecretStr | None = None
    task_link_max_age_s: float = Field(default=7 * 86400.0, gt=0)
    public_url: str | None = None
    # Slack's interactive buttons (`POST /slack/interactions`): the app's signing secret (off without it).
    slack_signing_secret: SecretStr | None = None
    # `healthmon ingest`: Segment-style calls and vendors' webhooks in, contract-v1 events out
    # (streams/ingest). The mappings live in one YAML file (default: streams/ingest/ingest.default.yaml);
    # each source it configures needs its secret here, with no default: the service refuses to start
    # without it. Write keys: comma-separated (several senders, or a key being rotated).
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(default=8090, ge=0, le=65535)
    ingest_config: Path | None = None
    ingest_segment_write_keys: SecretStr | None = None
    ingest_stripe_secret: SecretStr | None = None  # the endpoint's signing secret, whsec_...
    ingest_zendesk_secret: SecretStr | None = None  # the webhook's signing secret
    ingest_webhook_secret: SecretStr | None = None  # the generic signed JSON webhooks
    # Signed timestamps older (or further ahead) than this are refused: Stripe's own default, 5 minutes.
    ingest_signature_tolerance_s: float = Field(default=300.0, gt=0)
    # Larger bodies get 413 (Segment's batch limit is 500 KB; Stripe events stay well under 1 MB).
    ingest_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Requests per second per source (a token bucket of one second): past it, 429 with Retry-After.
    ingest_rate_per_s: float = Field(default=500.0, gt=0)
    # How long a request waits for Kafka to acknowledge its events before the sender gets 503.
    ingest_ack_timeout_s: float = Field(default=10.0, gt=0)
    # Event ids acknowledged are remembered in Redis this long, and a sender's later retry of one is
    # answered 2xx without writing it again (Stripe re-delivers for up to three days). 0: off (the
    # worker still drops repeats within an account's last 64 events).
    ingest_dedupe_window_s: float = Field(default=3 * 86400.0, ge=0)

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"kafka_security_protocol {self.kafka_security_protocol} needs HEALTHMON_KAFKA_SASL_USERNAME "
                "and HEALTHMON_KAFKA_SASL_PASSWORD"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together (client certificate)")
        return self

    def process_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment for another healthmon process with exactly these settings: ``base``
        without its HEALTHMON_ variables, plus every setting that differs from its default."""
        env = {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX)}

        def put(prefix: str, values: dict[str, Any]) -> None:
            for name, value in values.items():
                if isinstance(value, dict):
                    put(f"{prefix}{name.upper()}__", value)
                elif value is not None:
                    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
                    env[f"{prefix}{name.upper()}"] = str(raw)

        put(ENV_PREFIX, self.model_dump(exclude_defaults=True))
        return env

    @property
    def compression_type(self) -> str | None:
        """The producers' ``compression_type`` (None: uncompressed)."""
        return None if self.compression == "none" else self.compression

    def topic(self, name: str) -> str:
        return self.topic_prefix + getattr(self.topics, name)

    @property
    def input_topics(self) -> list[str]:
        return [self.topic(n) for n in ("accounts", "usage", "tickets", "billing", "surveys")]

    @property
    def kafka_bootstrap(self) -> str:
        """The broker list without Faust's ``kafka://`` scheme, for plain aiokafka clients."""
        return ",".join(part.split("://", 1)[-1] for part in self.broker.replace(";", ",").split(","))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
