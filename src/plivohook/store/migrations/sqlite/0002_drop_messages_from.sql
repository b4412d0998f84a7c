-- The index on messages.from_number goes. Senders are random, so each message took a random
-- leaf of it: one more page written to the WAL and checkpointed per message, a fifth of the
-- store's cost per message (measured with the group-commit writer). Filtering the inbox by
-- sender now reads newest-first through the table, which stays quick at the sizes one SQLite
-- file is meant for; PostgreSQL keeps its index.
DROP INDEX IF EXISTS messages_from;
