"""The state database's schema: its versioned migrations, each saying what it adds.

Store (services/core/store.py) applies at open, in order, every version the file lacks.
"""

from __future__ import annotations

# Append only: a released migration is never edited. Version N is MIGRATIONS[N - 1].
MIGRATIONS: tuple[str, ...] = (
    # 1: audit log and durable jobs
    """
    CREATE TABLE audit (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        at             REAL    NOT NULL,
        user_id        TEXT    NOT NULL,
        role           TEXT    NOT NULL,
        transport      TEXT    NOT NULL,
        command        TEXT    NOT NULL,
        outcome        TEXT    NOT NULL,
        detail         TEXT    NOT NULL DEFAULT '',
        correlation_id TEXT    NOT NULL
    );
    CREATE INDEX audit_at ON audit (at);

    CREATE TABLE jobs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        kind         TEXT    NOT NULL,
        args         TEXT    NOT NULL,
        state        TEXT    NOT NULL,
        requested_by TEXT    NOT NULL,
        correlation_id TEXT  NOT NULL,
        created_at   REAL    NOT NULL,
        started_at   REAL,
        finished_at  REAL,
        result       TEXT    NOT NULL DEFAULT '',
        error        TEXT    NOT NULL DEFAULT ''
    );
    CREATE INDEX jobs_state ON jobs (state);

    CREATE TABLE job_progress (
        job_id  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        seq     INTEGER NOT NULL,
        at      REAL    NOT NULL,
        line    TEXT    NOT NULL,
        PRIMARY KEY (job_id, seq)
    );
    """,
    # 2: job ownership (which process runs it) and machines
    """
    ALTER TABLE jobs ADD COLUMN owner_pid INTEGER;
    ALTER TABLE jobs ADD COLUMN owner_start INTEGER;

    CREATE TABLE machines (
        name         TEXT    PRIMARY KEY,
        image        TEXT    NOT NULL,
        state        TEXT    NOT NULL,
        features     TEXT    NOT NULL DEFAULT '[]',
        cpu          REAL,
        memory_bytes INTEGER,
        clone_method TEXT    NOT NULL DEFAULT '',
        nspawn_pid   INTEGER,
        nspawn_start INTEGER,
        op           TEXT,
        op_step      TEXT,
        op_job       INTEGER,
        op_pid       INTEGER,
        op_start     INTEGER,
        created_at   REAL    NOT NULL
    );
    """,
    # 3: where a job's chat message lives, and whether it still shows an old state
    """
    ALTER TABLE jobs ADD COLUMN chat_ref TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN chat_stale INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: addresses and port forwards
    """
    CREATE TABLE addresses (
        machine   TEXT    NOT NULL,
        family    TEXT    NOT NULL,
        address   TEXT    NOT NULL UNIQUE,
        prefixlen INTEGER NOT NULL,
        PRIMARY KEY (machine, family)
    );

    CREATE TABLE port_forwards (
        host_port    INTEGER NOT NULL,
        protocol     TEXT    NOT NULL,
        machine      TEXT    NOT NULL,
        machine_port INTEGER NOT NULL,
        PRIMARY KEY (host_port, protocol)
    );
    """,
    # 5: whether a failed job failed on the caller's input or on ctbot/the host
    """
    ALTER TABLE jobs ADD COLUMN internal_failure INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: a job's machine-readable result (e.g. the machine it made, as `status --json`)
    """
    ALTER TABLE jobs ADD COLUMN result_data TEXT NOT NULL DEFAULT '{}';
    """,
    # 7: what a running job is doing right now (a live line, replaced as it changes)
    """
    ALTER TABLE jobs ADD COLUMN activity TEXT NOT NULL DEFAULT '';
    """,
    # 8: what ctbot changed on the host (sysctls, its bridge, its nftables table)
    """
    CREATE TABLE host_changes (
        key      TEXT PRIMARY KEY,
        previous TEXT,
        current  TEXT NOT NULL,
        at       REAL NOT NULL
    );
    """,
    # 9: a machine's process limit, and what an operation in flight must be able to undo
    """
    ALTER TABLE machines ADD COLUMN pids INTEGER;
    ALTER TABLE machines ADD COLUMN op_data TEXT NOT NULL DEFAULT '{}';
    """,
    # 10: SSH: users' keyrings, who may log in where, machines' host keys
    """
    CREATE TABLE ssh_keys (
        user_id     TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        algorithm   TEXT NOT NULL,
        blob        TEXT NOT NULL,
        bits        INTEGER NOT NULL,
        comment     TEXT NOT NULL DEFAULT '',
        added_at    REAL NOT NULL,
        PRIMARY KEY (user_id, fingerprint)
    );
    CREATE TABLE ssh_access (
        machine     TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        login       TEXT NOT NULL,
        from_cidr   TEXT,
        expires_at  REAL,
        granted_by  TEXT NOT NULL,
        granted_at  REAL NOT NULL,
        PRIMARY KEY (machine, user_id, login)
    );
    CREATE TABLE ssh_host_keys (
        machine     TEXT NOT NULL,
        algorithm   TEXT NOT NULL,
        blob        TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        PRIMARY KEY (machine, algorithm)
    );
    """,
    # 11: addresses a `net set` replaced, held (taken by no one) until it completes; the
    # value ctbot asked a sysctl for, when the kernel keeps another (it rounds some)
    """
    ALTER TABLE host_changes ADD COLUMN requested TEXT;
    CREATE TABLE address_holds (
        machine   TEXT    NOT NULL,
        family    TEXT    NOT NULL,
        address   TEXT    NOT NULL UNIQUE,
        prefixlen INTEGER NOT NULL,
        PRIMARY KEY (machine, family)
    );
    """,
    # 12: machines inside machines (nesting); op is the operation under way (create,
    # destroy): a row with one after a crash is finished or rolled back by reconcile
    """
    CREATE TABLE inner_machines (
        outer      TEXT NOT NULL,
        name       TEXT NOT NULL,
        image      TEXT NOT NULL,
        desired    TEXT NOT NULL DEFAULT 'running',
        op         TEXT,
        memory_bytes INTEGER,
        cpu        REAL,
        features   TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        PRIMARY KEY (outer, name)
    );
    """,
    # 13: health checks: added checks, each check's state, raw results (48 h) and hourly
    # rollups (90 days), incidents and their Slack messages, mutes, the scheduler's jobs
    """
    CREATE TABLE health_checks (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        machine    TEXT    NOT NULL,
        kind       TEXT    NOT NULL,
        port       INTEGER,
        url        TEXT,
        expect     INTEGER,
        insecure   INTEGER NOT NULL DEFAULT 0,
        added_by   TEXT    NOT NULL,
        added_at   REAL    NOT NULL
    );
    CREATE TABLE health_state (
        machine    TEXT    NOT NULL,
        check_id   TEXT    NOT NULL,
        family     TEXT    NOT NULL,
        state      TEXT    NOT NULL,
        since      REAL    NOT NULL,
        fails      INTEGER NOT NULL DEFAULT 0,
        oks        INTEGER NOT NULL DEFAULT 0,
        recent     TEXT    NOT NULL DEFAULT '',
        flapping   INTEGER NOT NULL DEFAULT 0,
        hold       TEXT,
        last_at    REAL,
        last_ok    INTEGER,
        last_rtt   REAL,
        last_error TEXT,
        PRIMARY KEY (machine, check_id, family)
    );
    CREATE TABLE health_series (
        id         INTEGER PRIMARY KEY,
        machine    TEXT    NOT NULL,
        check_id   TEXT    NOT NULL,
        family     TEXT    NOT NULL,
        UNIQUE (machine, check_id, family)
    );
    CREATE TABLE health_results (
        series     INTEGER NOT NULL,
        at         INTEGER NOT NULL,
        ok         INTEGER NOT NULL,
        rtt_us     INTEGER,
        PRIMARY KEY (series, at)
    ) WITHOUT ROWID;
    CREATE TABLE health_rollups (
        series     INTEGER NOT NULL,
        hour       INTEGER NOT NULL,
        count      INTEGER NOT NULL,
        ups        INTEGER NOT NULL,
        rtt_min    REAL,
        rtt_sum    REAL,
        rtt_n      INTEGER NOT NULL DEFAULT 0,
        rtt_max    REAL,
        PRIMARY KEY (series, hour)
    ) WITHOUT ROWID;
    CREATE TABLE health_incidents (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        scope       TEXT    NOT NULL,
        family      TEXT,
        members     TEXT    NOT NULL DEFAULT '[]',
        failing     TEXT    NOT NULL DEFAULT '[]',
        opened_at   REAL    NOT NULL,
        resolved_at REAL,
        outcome     TEXT,
        channel     TEXT,
        ts          TEXT,
        reminded_at REAL
    );
    CREATE INDEX health_incidents_open ON health_incidents (resolved_at);
    CREATE TABLE health_mutes (
        target     TEXT    PRIMARY KEY,
        until      REAL    NOT NULL,
        reason     TEXT    NOT NULL DEFAULT '',
        muted_by   TEXT    NOT NULL,
        muted_at   REAL    NOT NULL
    );
    CREATE TABLE scheduler_jobs (
        id            TEXT PRIMARY KEY,
        next_run_time REAL,
        job_state     BLOB NOT NULL
    );
    CREATE INDEX scheduler_jobs_next ON scheduler_jobs (next_run_time);
    """,
    # 14: webhook deliveries, by the sender's delivery id (kept 7 days: a duplicate is
    # answered with the first one's result and runs nothing) and, where only the body is
    # signed (GitHub), by the body's digest too; a queued one keeps its command's words,
    # so that it still runs after a restart
    """
    CREATE TABLE webhook_deliveries (
        webhook       TEXT    NOT NULL,
        delivery_id   TEXT    NOT NULL,
        received_at   REAL    NOT NULL,
        state         TEXT    NOT NULL,
        rule          INTEGER,
        command       TEXT,
        words         TEXT,
        digest        TEXT,
        job_id        INTEGER,
        outcome       TEXT,
        result        TEXT,
        superseded_by TEXT,
        finished_at   REAL,
        PRIMARY KEY (webhook, delivery_id)
    ) WITHOUT ROWID;
    CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);
    CREATE UNIQUE INDEX webhook_deliveries_digest ON webhook_deliveries (webhook, digest);
    """,
    # 15: the hosts this ctbot drives over SSH, each with the host key pinned at `host add`
    """
    CREATE TABLE hosts (
        name      TEXT    PRIMARY KEY,
        address   TEXT    NOT NULL,
        port      INTEGER NOT NULL,
        user      TEXT    NOT NULL,
        host_key  TEXT    NOT NULL,
        added_by  TEXT    NOT NULL,
        added_at  REAL    NOT NULL
    ) WITHOUT ROWID;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
