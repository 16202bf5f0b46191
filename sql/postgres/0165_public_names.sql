-- Why: the web app showed creators (and businesses) by id. A business reads
-- who applied to its campaign, a supporter whose link it shares, everyone a
-- live event's creator: the name a person chose to be seen by (display name,
-- else username). users' RLS (0007) shows a caller its own row only (an admin
-- every row), so this one function answers names, for the public-facing roles
-- only (creator, business): a supporter's, an admin's (even one who also holds
-- one of those roles) or the system user's is not published through it, and
-- no email ever is. At most one page of ids a call.
CREATE FUNCTION oros_public_names(p_ids uuid[]) RETURNS TABLE (id uuid, name text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT u.id, coalesce(nullif(u.display_name, ''), u.username)::text
    FROM users AS u
   WHERE u.id = ANY(p_ids[1:200])
     AND NOT u.is_system
     AND coalesce(nullif(u.display_name, ''), u.username) IS NOT NULL
     AND EXISTS (SELECT 1 FROM user_roles AS r WHERE r.user_id = u.id AND r.role IN ('creator', 'business'))
     AND NOT EXISTS (SELECT 1 FROM user_roles AS r WHERE r.user_id = u.id AND r.role = 'admin');
$$;

REVOKE ALL ON FUNCTION oros_public_names(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oros_public_names(uuid[]) TO oros_app;
