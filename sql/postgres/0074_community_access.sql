-- Why: 0007 let the request role read every column of every post (the seed's
-- policy showed rows to their creator only, so the feed could not work, and a
-- wider policy would have shown locked content to everyone, since RLS filters
-- rows, not columns), and write every column of communities, members and posts
-- (a creator could backdate a post or re-own a community, a member could make
-- themselves a supporter). Here, as the product rules say (docs/supporters.md):
--  * Communities and post metadata are public: the listing, the feed and a
--    post's existence, type, price and tier (a seller shows what is for sale).
--  * A post's content (content_url, body) is readable by the request role only
--    through community_post_view, which returns it when the post is open or
--    the caller may read it, and NULL otherwise. The columns themselves are
--    not granted, so no query on the table (a column, *, a whole-row value,
--    a filter, RETURNING, COPY, pg_stats) reaches them.
--  * Who may read a locked post is defined once, in the view: its creator; an
--    admin (moderation and support); the sender of a tip that unlocked it (a
--    tip_unlocks row, written with the tip by the money side, its sender
--    copied from the tip by 0073); and a member of the post's community
--    holding an active membership (status 'active', ends_at unset or in the
--    future) of the post's unlock_tier.
--  * The view is owned by the schema owner and is not security_invoker, so it
--    reads the content columns, tips, unlocks and memberships with the owner's
--    rights and decides itself. It hides no row, it only masks two columns, so
--    a caller's query can reach the content only through the masking CASE (a
--    filter on content_url filters the masked value). It is therefore not a
--    security_barrier view: one would stop the planner from flattening it, and
--    a feed page would decide every post of the community before sorting
--    (measured by loadtests/bench_feed.py: 1 s instead of 1 ms a page). The
--    decision is a subquery kept apart (OFFSET 0) so it runs once per row
--    read, not once per column that uses it.
--  * Writes: a creator (RLS: holds the creator role) creates communities and
--    renames them; members join (insert themselves) and leave (delete their
--    row); the community's creator posts (0070's foreign key, the seed's
--    policy). Ids, times, counts and roles are the database's.
REVOKE SELECT, INSERT, UPDATE ON community_posts FROM oros_app;
GRANT SELECT (id, community_id, creator_id, content_type, is_locked, min_tip_to_unlock, unlock_tier, created_at)
  ON community_posts TO oros_app;
GRANT INSERT (community_id, creator_id, content_type, content_url, body, is_locked, min_tip_to_unlock, unlock_tier)
  ON community_posts TO oros_app;
CREATE POLICY "community_posts_public" ON community_posts FOR SELECT TO oros_app USING (true);

REVOKE INSERT, UPDATE ON communities FROM oros_app;
GRANT INSERT (creator_id, name, description), UPDATE (name, description) ON communities TO oros_app;
CREATE POLICY "communities_by_creators" ON communities AS RESTRICTIVE FOR INSERT TO oros_app
  WITH CHECK (EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = auth.uid() AND r.role IN ('creator', 'admin')));

REVOKE INSERT, UPDATE ON community_members FROM oros_app;
GRANT INSERT (community_id, user_id), DELETE ON community_members TO oros_app;
-- A community's creator sees its members (the seed shows each member only their own row).
CREATE POLICY "community_members_creator" ON community_members FOR SELECT TO oros_app
  USING (community_id IN (SELECT id FROM communities WHERE creator_id = auth.uid()));

CREATE VIEW community_post_view AS
SELECT p.id, p.community_id, p.creator_id, p.content_type, p.is_locked, p.min_tip_to_unlock, p.unlock_tier,
       p.created_at, a.unlocked,
       CASE WHEN a.unlocked THEN p.content_url END AS content_url,
       CASE WHEN a.unlocked THEN p.body END AS body
  FROM community_posts p
  CROSS JOIN LATERAL (
    -- CASE, not OR: each test runs only when the cheaper ones before it did not decide.
    SELECT CASE
      WHEN NOT p.is_locked THEN true
      WHEN auth.uid() IS NULL THEN false
      WHEN p.creator_id = auth.uid() OR auth.is_admin() THEN true
      WHEN EXISTS (SELECT 1 FROM tip_unlocks u
                    WHERE u.community_post_id = p.id AND u.from_user_id = auth.uid()) THEN true
      WHEN p.unlock_tier IS NULL THEN false
      ELSE EXISTS (SELECT 1 FROM community_members m
                    WHERE m.community_id = p.community_id AND m.user_id = auth.uid())
       AND EXISTS (SELECT 1 FROM memberships s
                    WHERE s.user_id = auth.uid() AND s.membership_type = p.unlock_tier AND s.status = 'active'
                      AND (s.ends_at IS NULL OR s.ends_at > now()))
    END AS unlocked
    OFFSET 0
  ) a;
GRANT SELECT ON community_post_view TO oros_app;
