-- Issue 11 (security review). A duplicate MessageUUID with another text keeps the first text and
-- is counted here, so that the API shows it; rejections get a retention, pruned by received_at.
ALTER TABLE messages ADD COLUMN conflicting_duplicates INTEGER NOT NULL DEFAULT 0;
CREATE INDEX rejections_received_at ON rejections (received_at);
