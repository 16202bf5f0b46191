-- Why: oros_open_share (0110) was executable by the request role, and took
-- the terms of the share from its arguments: p_pct (the supporter's percent of
-- each payout, out of the creator's net), p_ip_hash and p_ip (where the
-- supporter asked from: a click from there earns it nothing) and
-- p_tracker_url. Those are the deployment's (OROS_SHARE_PCT, the client's
-- address), not the caller's, and the database cannot tell a forged value
-- from them: a request-role caller could make itself a share link at 100%
-- (the creator's whole net on every paid click, money moved between users)
-- with no address (its own clicks then earned it rewards). Found by the
-- hostile-user pass (tests/test_db_roles.py, tests/test_supporters/test_shares.py).
--
-- So, as for every function whose arguments carry money terms
-- (oros_credit_boost's reward percent, oros_credit_tip's amount), only the
-- API's role may call it: the API checks who asks, names the supporter
-- (p_supporter) and passes the terms. The checks on who may share what stay
-- in the database (oros_share_blocker, now about p_supporter, not auth.uid()).
DROP FUNCTION oros_open_share(text, text, text, numeric, text, inet);
DROP FUNCTION oros_share_blocker(uuid);

-- Why p_user may not share the link p_link now, or NULL (the reasons of 0110 and 0151, in their order).
CREATE FUNCTION oros_share_blocker(p_link uuid, p_user uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT CASE
    WHEN l.id IS NULL THEN 'link_not_found'
    WHEN l.live_event_id IS NOT NULL THEN 'live_link'
    WHEN l.creator_id = p_user THEN 'own_link'
    WHEN c.business_id = p_user THEN 'own_campaign'
    WHEN EXISTS (SELECT 1 FROM campaign_creators m WHERE m.campaign_id = c.id AND m.creator_id = p_user)
      THEN 'campaign_member'
    WHEN c.status IS DISTINCT FROM 'active' THEN 'campaign_not_active'
    WHEN NOT EXISTS (SELECT 1 FROM campaign_creators m WHERE m.campaign_id = c.id AND m.creator_id = l.creator_id
                                                          AND m.status = 'accepted') THEN 'creator_not_accepted'
  END
    FROM (SELECT 1) AS one
    LEFT JOIN tracking_links l ON l.id = p_link AND l.disabled_at IS NULL
    LEFT JOIN campaigns c ON c.id = l.campaign_id
$$;

-- POST /v1/links/{code}/shares: p_supporter's share link of the link `p_code`
-- (NULL: no such link), made with `p_new_code` unless it has one already. A
-- code taken already raises unique_violation on the code (the API draws
-- another); two requests at once make one link. The percent is checked as
-- the column does (a NULL would fail the row's shape with a less clear error).
CREATE FUNCTION oros_open_share(p_supporter uuid, p_code text, p_new_code text, p_tracker_url text, p_pct numeric,
                                p_ip_hash text, p_ip inet)
RETURNS SETOF tracking_links
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_link tracking_links;
  v_blocker text;
BEGIN
  IF p_supporter IS NULL OR NOT EXISTS (SELECT 1 FROM user_roles WHERE user_id = p_supporter
                                                                  AND role IN ('supporter', 'admin')) THEN
    RAISE EXCEPTION 'oros_open_share: % is not a supporter', p_supporter USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_pct IS NULL OR p_pct < 0 OR p_pct > 100 THEN
    RAISE EXCEPTION 'oros_open_share: share percent % out of range', p_pct USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT l.* INTO v_link FROM tracking_links l
   WHERE l.id = (SELECT coalesce(s.shared_from, s.id) FROM tracking_links s WHERE s.code = p_code);
  IF NOT FOUND OR v_link.disabled_at IS NOT NULL THEN
    RETURN;
  END IF;
  v_blocker := oros_share_blocker(v_link.id, p_supporter);
  IF v_blocker IS NOT NULL THEN
    RAISE EXCEPTION 'link % cannot be shared by %: %', p_code, p_supporter, v_blocker
      USING ERRCODE = 'object_not_in_prerequisite_state', HINT = v_blocker;
  END IF;
  INSERT INTO tracking_links (campaign_id, creator_id, supporter_id, code, url, destination_url, shared_from,
                              share_pct, share_ip_hash, share_ip)
  VALUES (v_link.campaign_id, v_link.creator_id, p_supporter, p_new_code, p_tracker_url || '/' || p_new_code,
          v_link.destination_url, v_link.id, p_pct, p_ip_hash, p_ip)
  ON CONFLICT (shared_from, supporter_id) WHERE shared_from IS NOT NULL DO NOTHING;
  RETURN QUERY SELECT * FROM tracking_links WHERE shared_from = v_link.id AND supporter_id = p_supporter;
END;
$$;

REVOKE ALL ON FUNCTION oros_share_blocker(uuid, uuid),
  oros_open_share(uuid, text, text, text, numeric, text, inet) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oros_open_share(uuid, text, text, text, numeric, text, inet) TO oros_api;
