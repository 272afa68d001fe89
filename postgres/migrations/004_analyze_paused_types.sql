-- Statistics for the paused-types table, which every claim reads in an anti-join.
-- Never analyzed, it is taken by the planner for ten pages of rows, enough to cover
-- every type: the claim was then costed as a scan of the whole backlog and compiled
-- with JIT each time. Analyzed, its (few) rows are counted as they are. PauseType and
-- ResumeType analyze it again after each change.
ANALYZE {{.Paused}};
