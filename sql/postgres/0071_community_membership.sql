-- Why: communities and their members (0005) carried no checks beyond the
-- seed's, nullable keys and times (a community without a creator, a feed
-- cursor over NULL created_at), and no member count, which every community
-- page shows. Counting members on each read costs a scan of the community's
-- members; a counter kept by a trigger costs one row update per join or leave,
-- serialised on the community's row (a short lock: one statement per request).
-- The trigger is SECURITY DEFINER because the joining user may not update the
-- community (only its creator may, and only its name and description, 0074).
ALTER TABLE communities
  ALTER COLUMN creator_id SET NOT NULL,
  ALTER COLUMN created_at SET NOT NULL,
  ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0,
  ADD CONSTRAINT community_member_count CHECK (member_count >= 0),
  ADD CONSTRAINT community_name_length CHECK (char_length(btrim(name)) BETWEEN 1 AND 100),
  ADD CONSTRAINT community_description_length CHECK (char_length(description) <= 5000);

ALTER TABLE community_members
  ALTER COLUMN community_id SET NOT NULL,
  ALTER COLUMN user_id SET NOT NULL,
  ALTER COLUMN role SET NOT NULL,
  ALTER COLUMN joined_at SET NOT NULL;

-- The public listing (newest first) and one creator's communities.
CREATE INDEX idx_communities_listing ON communities (created_at DESC, id DESC);
DROP INDEX idx_communities_creator;
CREATE INDEX idx_communities_creator ON communities (creator_id, created_at DESC, id DESC);
-- A community's members, newest first (its creator's list).
CREATE INDEX idx_community_members_listing ON community_members (community_id, joined_at DESC, id DESC);

CREATE FUNCTION community_count_members() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    UPDATE communities SET member_count = member_count + 1 WHERE id = NEW.community_id;
  ELSE
    -- A community being deleted cascades to its members; its row is gone, so nothing is updated.
    UPDATE communities SET member_count = member_count - 1 WHERE id = OLD.community_id;
  END IF;
  RETURN NULL;
END;
$$;
CREATE TRIGGER community_members_count AFTER INSERT OR DELETE ON community_members
  FOR EACH ROW EXECUTE FUNCTION community_count_members();
