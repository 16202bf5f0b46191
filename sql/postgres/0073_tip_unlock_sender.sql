-- Why: a locked post is open to the sender of a tip that unlocked it, and the
-- seed's tip_unlocks names only the tip, so the check "did this caller unlock
-- this post" joined every unlock of the post to tips, or every tip of the
-- caller to unlocks: linear in a popular post's unlocks or a heavy tipper's
-- tips, for each locked post of each feed page. The sender is copied from
-- the tip onto its unlock (a tip's sender never changes), so the check is one
-- probe of (community_post_id, from_user_id). A trigger copies it, so the
-- flow that records tips and unlocks inserts (tip_id, community_post_id) as
-- before and cannot get the sender wrong.
ALTER TABLE tip_unlocks ADD COLUMN from_user_id UUID REFERENCES users(id) ON DELETE CASCADE;

CREATE FUNCTION tip_unlock_sender() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  NEW.from_user_id := (SELECT t.from_user_id FROM tips t WHERE t.id = NEW.tip_id);
  RETURN NEW;
END;
$$;
CREATE TRIGGER tip_unlocks_sender BEFORE INSERT OR UPDATE ON tip_unlocks
  FOR EACH ROW EXECUTE FUNCTION tip_unlock_sender();

CREATE INDEX idx_tip_unlocks_post_sender ON tip_unlocks (community_post_id, from_user_id);
