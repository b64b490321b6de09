-- Instances being seeded (DESIGN 13): a row from the moment the copy starts until the entries
-- up to `floor` are marked applied there, in the same transaction that deletes it. While it
-- exists the instance serves nothing, whichever proxy leads; a restarted or new leader resumes
-- the copy from it. `floor`: every entry up to it was applied on the source before the copy
-- began, so the copy holds it.
CREATE TABLE seeding (
    instance TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    floor BIGINT NOT NULL,
    started_ms BIGINT NOT NULL
);
