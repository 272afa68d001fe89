-- Failures by the time they were recorded, for the health rules' window (Stats.Recent):
-- the failures of the last minutes are read from this index, however many older
-- events are kept. Completions in the window come from the completed range of the due
-- index (state_at is completed_at there). As in 001, the index leads with status in
-- place of a partial index, so that a count reads the failed range only; state_at
-- (NULL: given up) and user_id complete it, so that the count reads nothing else.
-- Adding an index is an online operation on both servers: writes go on meanwhile.
ALTER TABLE {{.Table}} ADD KEY failed_at (status, updated_at, state_at, user_id);
