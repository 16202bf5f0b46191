-- Why: a live event's link cannot be shared (docs/live.md, "Shares"). A live
-- sale is recognised by its link being the event's live link (one per event,
-- tracking_links.live_event_id), and the live rules (the live window, the
-- event's commission, oros_post_live_sales' books and live_sales_match_ledger)
-- hang on it. A share link is another link: its sales would be ordinary
-- sales, paid the campaign's payout per sale outside the live window, with a
-- share reward the live books have no legs for. And the live link is public
-- by design (everyone sees it on the event's page, live_event_links), so a
-- share of it would let any supporter take a part of the creator's
-- commission for passing on a link anyone can read. So oros_share_blocker
-- refuses it ('live_link', 409 at the API), before any other reason.
CREATE OR REPLACE FUNCTION oros_share_blocker(p_link uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT CASE
    WHEN l.id IS NULL THEN 'link_not_found'
    WHEN l.live_event_id IS NOT NULL THEN 'live_link'
    WHEN l.creator_id = auth.uid() THEN 'own_link'
    WHEN c.business_id = auth.uid() THEN 'own_campaign'
    WHEN EXISTS (SELECT 1 FROM campaign_creators m WHERE m.campaign_id = c.id AND m.creator_id = auth.uid())
      THEN 'campaign_member'
    WHEN c.status IS DISTINCT FROM 'active' THEN 'campaign_not_active'
    WHEN NOT EXISTS (SELECT 1 FROM campaign_creators m WHERE m.campaign_id = c.id AND m.creator_id = l.creator_id
                                                          AND m.status = 'accepted') THEN 'creator_not_accepted'
  END
    FROM (SELECT 1) AS one
    LEFT JOIN tracking_links l ON l.id = p_link AND l.disabled_at IS NULL
    LEFT JOIN campaigns c ON c.id = l.campaign_id
$$;

-- Shares of live links made before this refusal: disabled, so the settler pays
-- nothing through them (link_disabled) and the next run tells the trackers
-- (settler/post.py publishes links disabled since its last publish).
UPDATE tracking_links SET disabled_at = now()
 WHERE disabled_at IS NULL
   AND shared_from IN (SELECT id FROM tracking_links WHERE live_event_id IS NOT NULL);
