-- Why: a share link's share_ip_hash (0110) is a keyed hash (OROS_IP_HASH_KEY)
-- of where its supporter asked from, and while anonymizing it is the only
-- thing the settler compares a click with. Once the key was rotated no
-- click's hash could match it any more, so every existing share link earned
-- on its supporter's own clicks. And a supporter on IPv6 clicked from another
-- address of its /64 (every host gets one), which never matched either.
--
-- share_ip_key is the fingerprint of the key (and of the hashing scheme:
-- IPv4 by address, IPv6 by /64, oros.clientip.visitor_key) the hash was made
-- under. The settler uses a hash only under the key it runs with; one made
-- under another key, or before this column (NULL), says the address is not
-- known, and the link earns nothing until its supporter asks for it again:
-- oros_open_share then hashes the address anew (docs/supporters.md).
ALTER TABLE tracking_links
  ADD COLUMN share_ip_key TEXT,
  ADD CONSTRAINT share_ip_key_hex CHECK (share_ip_key ~ '^[0-9a-f]{16}$'),
  ADD CONSTRAINT share_ip_key_shared CHECK (supporter_id IS NOT NULL OR share_ip_key IS NULL);

DROP FUNCTION oros_open_share(uuid, text, text, text, numeric, text, inet);

-- POST /v1/links/{code}/shares: p_supporter's share link of the link `p_code`
-- (NULL: no such link), made with `p_new_code` unless it has one already. A
-- code taken already raises unique_violation on the code (the API draws
-- another); two requests at once make one link. The percent is checked as
-- the column does (a NULL would fail the row's shape with a less clear error).
-- Asked again for a link whose address hash was made under another key than
-- p_ip_key, the hash is made anew from where it is asked now; under the same
-- key it stays (asking from elsewhere does not move where "own clicks" are).
CREATE FUNCTION oros_open_share(p_supporter uuid, p_code text, p_new_code text, p_tracker_url text, p_pct numeric,
                                p_ip_hash text, p_ip inet, p_ip_key text)
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
                              share_pct, share_ip_hash, share_ip, share_ip_key)
  VALUES (v_link.campaign_id, v_link.creator_id, p_supporter, p_new_code, p_tracker_url || '/' || p_new_code,
          v_link.destination_url, v_link.id, p_pct, p_ip_hash, p_ip, p_ip_key)
  ON CONFLICT (shared_from, supporter_id) WHERE shared_from IS NOT NULL DO UPDATE
    SET share_ip_hash = excluded.share_ip_hash, share_ip_key = excluded.share_ip_key
    WHERE tracking_links.share_ip_key IS DISTINCT FROM excluded.share_ip_key;
  RETURN QUERY SELECT * FROM tracking_links WHERE shared_from = v_link.id AND supporter_id = p_supporter;
END;
$$;

REVOKE ALL ON FUNCTION oros_open_share(uuid, text, text, text, numeric, text, inet, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oros_open_share(uuid, text, text, text, numeric, text, inet, text) TO oros_api;
