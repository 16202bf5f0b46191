-- Why: a supporter spreads a creator's link through a share link of its own
-- (POST /v1/links/{code}/shares, issue 15): a tracking link with the same
-- campaign, creator and destination, and the seed's supporter_id set, whose
-- paid events earn the supporter a share of the payout (0111). The seed's
-- column says whose share link it is; what it lacks:
--  * shared_from: the creator's link it shares, so asking twice gives the same
--    link (one share link per link and supporter, a unique index) and a share
--    of a share is a share of the creator's link;
--  * share_pct: OROS_SHARE_PCT when the link was made, the terms the
--    supporter shared under (as a boost keeps its reward_pct), whatever the
--    setting becomes later;
--  * share_ip_hash, share_ip: where the supporter asked from. A supporter
--    never earns on its own clicks, and a click is anonymous: its address is
--    the one thing that ties it to the supporter. The settler compares the
--    keyed hash of the full address (OROS_IP_HASH_KEY, the hash ingest writes
--    to ClickHouse's ip_hash) with the click's, and, where the deployment keeps
--    raw addresses (OROS_ANONYMIZE_IP off; ClickHouse then keeps the click's ip
--    after the hash expired), the address itself: share_ip is NULL while
--    anonymizing, as events keep no raw address then. Neither is readable
--    through the API: the link's creator and business see its row, not where
--    the supporter was.
ALTER TABLE tracking_links
  ADD COLUMN shared_from UUID REFERENCES tracking_links(id) ON DELETE CASCADE,
  ADD COLUMN share_pct NUMERIC(5,2),
  ADD COLUMN share_ip_hash TEXT,
  ADD COLUMN share_ip INET,
  ADD CONSTRAINT share_link_shape CHECK (
    (supporter_id IS NULL) = (shared_from IS NULL) AND (supporter_id IS NULL) = (share_pct IS NULL)
    AND (supporter_id IS NOT NULL OR (share_ip_hash IS NULL AND share_ip IS NULL))),
  ADD CONSTRAINT share_pct_percent CHECK (share_pct BETWEEN 0 AND 100),
  ADD CONSTRAINT share_ip_hash_hex CHECK (share_ip_hash ~ '^[0-9a-f]{32}$');
CREATE UNIQUE INDEX idx_tracking_share_once ON tracking_links(shared_from, supporter_id) WHERE shared_from IS NOT NULL;
CREATE INDEX idx_tracking_supporter ON tracking_links(supporter_id) WHERE supporter_id IS NOT NULL;

-- The request role reads every column but where the supporter asked from.
REVOKE SELECT ON tracking_links FROM oros_app;
GRANT SELECT (id, campaign_id, creator_id, supporter_id, code, url, click_count, conversion_count, created_at,
              destination_url, disabled_at, shared_from, share_pct) ON tracking_links TO oros_app;
-- A supporter sees its share links (their creator and business see them already, by 0007's policies).
CREATE POLICY "tracking_links_supporter" ON tracking_links FOR SELECT TO oros_app USING (auth.uid() = supporter_id);

-- Events record the share they were paid through: the settler copies the
-- link's supporter (supporter_id, the seed's column) and, for an event that
-- earned it, share_reward: the supporter's part of the payout, out of the
-- creator's net (0111). NULL: no reward (no share link, or the supporter's own
-- click). reversed_reward: what refunds took back of it, as reversed_payout.
ALTER TABLE events
  ADD COLUMN share_reward NUMERIC(12,2),
  ADD COLUMN reversed_reward NUMERIC(12,2) NOT NULL DEFAULT 0,
  ADD CONSTRAINT share_reward_within CHECK (share_reward IS NULL OR (share_reward > 0 AND supporter_id IS NOT NULL
                                            AND share_reward <= payout_amount - platform_fee)),
  ADD CONSTRAINT reversed_reward_within CHECK (reversed_reward >= 0 AND reversed_reward <= coalesce(share_reward, 0));

-- A share reward names its share link, and pays through one transfer (one per
-- share link, creator and fee in a run; one per sale): the payout's own.
ALTER TABLE rewards
  ADD COLUMN tracking_link_id UUID REFERENCES tracking_links(id) ON DELETE CASCADE,
  ADD CONSTRAINT reward_share_named CHECK (source IS DISTINCT FROM 'share' OR tracking_link_id IS NOT NULL);
CREATE UNIQUE INDEX idx_rewards_share_transfer ON rewards(transfer_id) WHERE source = 'share';
GRANT SELECT (tracking_link_id) ON rewards TO oros_app;

CREATE OR REPLACE VIEW reward_view AS
SELECT r.id, r.user_id, r.source, r.status, r.campaign_id, r.boost_id, r.transfer_id, r.paid_at, r.created_at,
       CASE WHEN r.status = 'pending' AND a.boost_id IS NOT NULL THEN a.reward ELSE r.amount END AS amount,
       trunc(a.value, 2) AS unspent, r.tracking_link_id
  FROM rewards r LEFT JOIN boost_accruals a ON a.boost_id = r.boost_id
 WHERE r.user_id = auth.uid();

-- Why a caller may not share a link now, or NULL; p_link is the creator's
-- link (a share link's shared_from). Only a link of an active campaign whose
-- creator is accepted on it; never by its creator, the campaign's business or
-- any creator of the campaign (a share reward is paid out of a creator's net:
-- a creator of the campaign sharing it would move money between creators of
-- one campaign on its own clicks; its own link's share would pay itself).
CREATE FUNCTION oros_share_blocker(p_link uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT CASE
    WHEN l.id IS NULL THEN 'link_not_found'
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

-- POST /v1/links/{code}/shares: the caller's share link of the link `p_code`
-- (NULL: no such link), made with `p_new_code` unless the caller has one
-- already. A code taken already raises unique_violation on the code (the API
-- draws another); two requests at once make one link.
CREATE FUNCTION oros_open_share(p_code text, p_new_code text, p_tracker_url text, p_pct numeric,
                                p_ip_hash text, p_ip inet)
RETURNS SETOF tracking_links
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_caller uuid := auth.uid();
  v_link tracking_links;
  v_blocker text;
BEGIN
  IF v_caller IS NULL OR NOT EXISTS (SELECT 1 FROM user_roles WHERE user_id = v_caller
                                                               AND role IN ('supporter', 'admin')) THEN
    RAISE EXCEPTION 'oros_open_share: % is not a supporter', v_caller USING ERRCODE = 'insufficient_privilege';
  END IF;
  SELECT l.* INTO v_link FROM tracking_links l
   WHERE l.id = (SELECT coalesce(s.shared_from, s.id) FROM tracking_links s WHERE s.code = p_code);
  IF NOT FOUND OR v_link.disabled_at IS NOT NULL THEN
    RETURN;
  END IF;
  v_blocker := oros_share_blocker(v_link.id);
  IF v_blocker IS NOT NULL THEN
    RAISE EXCEPTION 'link % cannot be shared by %: %', p_code, v_caller, v_blocker
      USING ERRCODE = 'object_not_in_prerequisite_state', HINT = v_blocker;
  END IF;
  INSERT INTO tracking_links (campaign_id, creator_id, supporter_id, code, url, destination_url, shared_from,
                              share_pct, share_ip_hash, share_ip)
  VALUES (v_link.campaign_id, v_link.creator_id, v_caller, p_new_code, p_tracker_url || '/' || p_new_code,
          v_link.destination_url, v_link.id, p_pct, p_ip_hash, p_ip)
  ON CONFLICT (shared_from, supporter_id) WHERE shared_from IS NOT NULL DO NOTHING;
  RETURN QUERY SELECT * FROM tracking_links WHERE shared_from = v_link.id AND supporter_id = v_caller;
END;
$$;

REVOKE ALL ON FUNCTION oros_share_blocker(uuid), oros_open_share(text, text, text, numeric, text, inet) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oros_open_share(text, text, text, numeric, text, inet) TO oros_app;
