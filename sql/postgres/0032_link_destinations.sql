-- Why: a creator could point its link anywhere (its destination_url on any
-- host), so the business paid for clicks sent to a phishing page. A link may
-- now go only to its campaign's allowed hosts: allowed_destination_hosts when
-- the business set it, else the host of the campaign's destination_url. Exact
-- host match (a subdomain only if listed). The rule lives here, in triggers,
-- so no producer (the admin API, a script, a future service) can bypass it;
-- the admin API answers the refusal 422 naming the column.
--
-- A host is read only from a plain authority: scheme, host, optional port,
-- then '/', '?', '#' or the end. Userinfo ('@'), backslashes, percent-escapes
-- and IPv6 literals are refused, because there URL parsers and browsers
-- disagree about which host a URL reaches ("https://evil\@shop.example").
--
-- Narrowing a campaign's hosts (or moving its destination) disables the links
-- outside them (disabled_at): the tracker stops resolving them (404), the rest
-- keep working. Disabling is final; widening again does not revive a link.
ALTER TABLE campaigns ADD COLUMN allowed_destination_hosts TEXT[];
ALTER TABLE tracking_links ADD COLUMN disabled_at TIMESTAMPTZ;

-- The lower-case host an http(s) URL reaches, or NULL when its authority is not plain.
CREATE FUNCTION oros_destination_host(p_url text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog AS $$
  SELECT lower((regexp_match(p_url, '^https?://([A-Za-z0-9.-]+)(?::[0-9]{1,5})?(?:[/?#]|$)'))[1])
$$;

-- Where a campaign's links may go (an element is NULL when the destination has no plain host).
CREATE FUNCTION oros_campaign_hosts(p_allowed text[], p_destination text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT coalesce(p_allowed, ARRAY[oros_destination_host(p_destination)])
$$;

-- A campaign's hosts are host names (stored lower-case, sorted, once each), at most 20,
-- and its own destination is one of them.
CREATE FUNCTION campaigns_check_destinations() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_bad text;
  v_host text;
BEGIN
  IF NEW.allowed_destination_hosts IS NOT NULL THEN
    NEW.allowed_destination_hosts := ARRAY(SELECT DISTINCT lower(h) FROM unnest(NEW.allowed_destination_hosts) h
                                            ORDER BY 1);
    SELECT h INTO v_bad FROM unnest(NEW.allowed_destination_hosts) h
     WHERE h IS NULL OR length(h) > 253
        OR h !~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$'
     LIMIT 1;
    IF FOUND THEN
      RAISE EXCEPTION 'allowed_destination_hosts: % is not a host name', coalesce(v_bad, 'null')
        USING ERRCODE = 'check_violation', COLUMN = 'allowed_destination_hosts';
    END IF;
    IF cardinality(NEW.allowed_destination_hosts) NOT BETWEEN 1 AND 20 THEN
      RAISE EXCEPTION 'allowed_destination_hosts must list 1 to 20 hosts (null: the destination_url''s host)'
        USING ERRCODE = 'check_violation', COLUMN = 'allowed_destination_hosts';
    END IF;
  END IF;
  IF NEW.destination_url IS NOT NULL THEN
    v_host := oros_destination_host(NEW.destination_url);
    IF v_host IS NULL THEN
      RAISE EXCEPTION 'destination_url must be http(s)://host[:port] then /, ? or # (no user, backslash or escapes)'
        USING ERRCODE = 'check_violation', COLUMN = 'destination_url';
    END IF;
    IF NOT v_host = ANY(oros_campaign_hosts(NEW.allowed_destination_hosts, NEW.destination_url)) THEN
      RAISE EXCEPTION 'destination_url: its host % is not in allowed_destination_hosts', v_host
        USING ERRCODE = 'check_violation', COLUMN = 'destination_url';
    END IF;
  END IF;
  RETURN NEW;
END;
$$;

-- A link's destination is on one of its campaign's hosts. FOR SHARE waits for a
-- campaign change in flight, so a link can never slip in under the old hosts.
CREATE FUNCTION tracking_links_check_destination() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_hosts text[];
BEGIN
  SELECT oros_campaign_hosts(allowed_destination_hosts, destination_url) INTO v_hosts
    FROM campaigns WHERE id = NEW.campaign_id FOR SHARE;
  IF NOT coalesce(oros_destination_host(NEW.destination_url) = ANY(v_hosts), false) THEN
    RAISE EXCEPTION 'destination_url: links of this campaign may go only to %',
      coalesce(array_to_string(v_hosts, ', '), 'its destination_url''s host')
      USING ERRCODE = 'check_violation', COLUMN = 'destination_url';
  END IF;
  RETURN NEW;
END;
$$;

-- After a campaign's hosts or destination change: its links outside them stop.
CREATE FUNCTION campaigns_disable_stray_links() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  UPDATE tracking_links SET disabled_at = now()
   WHERE campaign_id = NEW.id AND disabled_at IS NULL
     AND NOT coalesce(oros_destination_host(destination_url)
                      = ANY(oros_campaign_hosts(NEW.allowed_destination_hosts, NEW.destination_url)), false);
  RETURN NULL;
END;
$$;

-- Links made before this rule, outside their campaign's hosts.
UPDATE tracking_links t SET disabled_at = now()
  FROM campaigns c
 WHERE c.id = t.campaign_id AND t.disabled_at IS NULL
   AND NOT coalesce(oros_destination_host(t.destination_url)
                    = ANY(oros_campaign_hosts(c.allowed_destination_hosts, c.destination_url)), false);
UPDATE tracking_links SET disabled_at = now() WHERE campaign_id IS NULL AND disabled_at IS NULL;

CREATE TRIGGER campaigns_check_destinations BEFORE INSERT OR UPDATE OF destination_url, allowed_destination_hosts
  ON campaigns FOR EACH ROW EXECUTE FUNCTION campaigns_check_destinations();
CREATE TRIGGER tracking_links_check_destination BEFORE INSERT OR UPDATE OF destination_url, campaign_id
  ON tracking_links FOR EACH ROW EXECUTE FUNCTION tracking_links_check_destination();
CREATE TRIGGER campaigns_disable_stray_links AFTER UPDATE OF destination_url, allowed_destination_hosts
  ON campaigns FOR EACH ROW EXECUTE FUNCTION campaigns_disable_stray_links();

GRANT INSERT (allowed_destination_hosts), UPDATE (allowed_destination_hosts) ON campaigns TO oros_app;
GRANT SELECT (disabled_at) ON tracking_links TO oros_tracker;
