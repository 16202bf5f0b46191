-- Why: oros_public_names (0165) reads "at most one page of ids a call" with
-- p_ids[1:200], but a slice of a 2-D array keeps every inner element: a
-- 2 x 5000 array read 10,000 users. Only oros_app may call it and the API
-- passes one page, so this was cost, not exposure; the bound now holds
-- whatever the array's shape. Found by the review of 0163.
CREATE OR REPLACE FUNCTION oros_public_names(p_ids uuid[]) RETURNS TABLE (id uuid, name text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT u.id, coalesce(nullif(u.display_name, ''), u.username)::text
    FROM users AS u
   WHERE u.id IN (SELECT p.id FROM unnest(p_ids) WITH ORDINALITY AS p (id, n) WHERE p.n <= 200)
     AND NOT u.is_system
     AND coalesce(nullif(u.display_name, ''), u.username) IS NOT NULL
     AND EXISTS (SELECT 1 FROM user_roles AS r WHERE r.user_id = u.id AND r.role IN ('creator', 'business'))
     AND NOT EXISTS (SELECT 1 FROM user_roles AS r WHERE r.user_id = u.id AND r.role = 'admin');
$$;
