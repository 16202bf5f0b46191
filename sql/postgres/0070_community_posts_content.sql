-- Why: the seed's community_posts (0005) cannot hold a text post (content_url
-- is the only content column), cannot say which membership tier includes a
-- locked post, and lets a post claim any creator and any community. Here:
--  * body: the text of a text post, or the caption of an image, video or link
--    post. A URL cannot carry text, and storing text behind a URL we host would
--    put a second copy of locked content outside the database's access rules;
--    body is gated exactly like content_url (0074).
--  * unlock_tier: the membership tier that includes a locked post (members of
--    the community holding an active membership of that type read it, 0074).
--    Only tiers whose effect is reading posts are allowed (docs/supporters.md).
--  * the lock terms are consistent: a locked post names a way in (a price, a
--    tier or both); an open post names neither, since a price nobody pays and a
--    tier nobody needs would only mislead the client.
--  * a post belongs to its community's creator, for every writer: a composite
--    foreign key ties (community_id, creator_id) to the community, and the
--    seed's RLS policy ties creator_id to the caller, so only the community's
--    creator posts into it.
--  * content_url is an absolute http(s) URL of at most 2048 characters, as the
--    API checks (admin_api/payload.py http_url); body at most 20000 characters.
--  * created_at is NOT NULL (the feed's keyset cursor orders on it), with an
--    index serving one community's feed newest first; it replaces the seed's
--    index on community_id alone, which it covers.
ALTER TABLE community_posts
  ADD COLUMN body TEXT,
  ADD COLUMN unlock_tier VARCHAR(30),
  ALTER COLUMN community_id SET NOT NULL,
  ALTER COLUMN creator_id SET NOT NULL,
  ALTER COLUMN content_type SET NOT NULL,
  ALTER COLUMN is_locked SET NOT NULL,
  ALTER COLUMN created_at SET NOT NULL,
  ADD CONSTRAINT post_body_length CHECK (char_length(body) BETWEEN 1 AND 20000),
  ADD CONSTRAINT post_content_url CHECK (
    char_length(content_url) <= 2048 AND content_url ~* '^https?://[^[:space:][:cntrl:]]+$'),
  ADD CONSTRAINT post_has_content CHECK (
    CASE content_type WHEN 'text' THEN body IS NOT NULL ELSE content_url IS NOT NULL END),
  ADD CONSTRAINT post_unlock_tier CHECK (unlock_tier IN ('supporter_plus')),
  ADD CONSTRAINT post_lock_terms CHECK (
    CASE WHEN is_locked THEN min_tip_to_unlock IS NOT NULL OR unlock_tier IS NOT NULL
         ELSE min_tip_to_unlock IS NULL AND unlock_tier IS NULL END);

ALTER TABLE communities ADD CONSTRAINT communities_id_creator UNIQUE (id, creator_id);
ALTER TABLE community_posts ADD CONSTRAINT post_by_community_creator
  FOREIGN KEY (community_id, creator_id) REFERENCES communities (id, creator_id) ON DELETE CASCADE;

DROP INDEX idx_community_posts_community;
CREATE INDEX idx_community_posts_feed ON community_posts (community_id, created_at DESC, id DESC);
