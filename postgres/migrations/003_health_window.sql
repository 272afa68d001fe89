-- Failures by the time they were recorded, for the health rules' window (Stats.Recent):
-- the failures of the last minutes are counted from this index, however many older
-- events are kept. Completions in the window come from the completed index.
CREATE INDEX {{.Name "failed_at"}} ON {{.Table}} (updated_at) WHERE status = 'failed';
