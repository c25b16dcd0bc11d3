-- The agents' queue and the dashboard (as the SQLite backend's sqlite_schema.py):
-- the queue lists conversations by status, most recently updated first; the dashboard and the
-- insights count turns by period from four facts of each turn kept in clear beside its sealed
-- trace (codes and numbers, no conversation text: voicebot/storage/analytics.py turn_facts).
-- Additive only: a worker of the previous version keeps writing turns (these stay NULL).

ALTER TABLE turns ADD COLUMN handoff_reason TEXT;
ALTER TABLE turns ADD COLUMN unanswered TEXT;
ALTER TABLE turns ADD COLUMN sentiment DOUBLE PRECISION;  -- SQLite's REAL is 8 bytes: the same means on both
ALTER TABLE turns ADD COLUMN timings JSONB;  -- stage -> ms, plus "turn"

CREATE INDEX conversations_status ON conversations (status, updated_at);
CREATE INDEX turns_created ON turns (created_at);
CREATE INDEX conversations_created ON conversations (created_at);
