-- Why: the seed gives a community member a role, member or supporter, but
-- nothing set it, and the request role could write it (0007 granted INSERT and
-- UPDATE on every column), so anyone could call themselves a supporter.
-- A member is a 'supporter' of a community when they have tipped its creator:
-- a fact recorded by a `tips` row (created only from a Stripe-confirmed
-- payment). The role is derived here from those rows and written by nobody
-- else (0074 grants no role column): when a member joins, and when a tip to
-- the creator is recorded. It is a badge the creator sees; no access depends
-- on it (locked posts open by tip_unlocks and memberships, 0074). A platform
-- membership (supporter_plus) is not a tie to one creator, and it ends with
-- time, which a stored role cannot follow, so it is not part of the role.
-- Both functions are SECURITY DEFINER: the joining user cannot read tips sent
-- by others, and the tip's writer (a webhook role) has no grant on members.
CREATE FUNCTION community_member_role() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  NEW.role := CASE WHEN EXISTS (
      SELECT 1 FROM tips t JOIN communities c ON c.creator_id = t.to_creator_id
       WHERE c.id = NEW.community_id AND t.from_user_id = NEW.user_id)
    THEN 'supporter' ELSE 'member' END;
  RETURN NEW;
END;
$$;
CREATE TRIGGER community_members_role BEFORE INSERT ON community_members
  FOR EACH ROW EXECUTE FUNCTION community_member_role();

CREATE FUNCTION community_supporter_from_tip() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  UPDATE community_members m SET role = 'supporter'
    FROM communities c
   WHERE c.id = m.community_id AND c.creator_id = NEW.to_creator_id
     AND m.user_id = NEW.from_user_id AND m.role <> 'supporter';
  RETURN NULL;
END;
$$;
CREATE TRIGGER tips_make_supporters AFTER INSERT ON tips
  FOR EACH ROW EXECUTE FUNCTION community_supporter_from_tip();
