-- The PostgreSQL backend's first schema: the same tables and columns as the SQLite backend's
-- (voicebot/storage/sqlite_schema.py), so voicebot/storage/records.py shapes both alike.
-- Times are seconds since the epoch (double precision), as in SQLite.

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL DEFAULT 'default',
    token_hash TEXT UNIQUE NOT NULL,
    channel TEXT NOT NULL,
    user_id TEXT,
    language TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    turn_count INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    rating INTEGER,
    feedback TEXT
);
CREATE INDEX conversations_updated ON conversations (updated_at);
CREATE INDEX conversations_tenant ON conversations (tenant, updated_at);
CREATE INDEX conversations_user ON conversations (user_id);

CREATE TABLE turns (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    turn_index INTEGER NOT NULL,
    turn_id TEXT NOT NULL,
    user_text TEXT NOT NULL,
    bot_text TEXT NOT NULL,
    language TEXT NOT NULL,
    intent TEXT,
    path TEXT NOT NULL,
    trace TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    rating INTEGER,
    feedback TEXT,
    interrupted INTEGER NOT NULL DEFAULT 0,
    delivered_text TEXT,
    PRIMARY KEY (conversation_id, turn_index)
);
CREATE INDEX turns_turn_id ON turns (conversation_id, turn_id);

CREATE TABLE dialogue_state (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX dialogue_state_updated ON dialogue_state (updated_at);

CREATE TABLE user_profiles (
    user_id TEXT PRIMARY KEY,
    display_name TEXT,
    preferred_language TEXT,
    data TEXT NOT NULL DEFAULT '{}',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE audit_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    tenant TEXT,
    detail JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant ON audit_log (tenant, id);
