-- Why: a live sale's refund counts only while its commission is held
-- (settler/refunds.py); after the hold it stands (refund_after_hold). The
-- business refunding from the live page could not tell: the held legs are
-- the creator's and the platform's, and ledger_entries' RLS (0007) shows each
-- user only their own. This function answers, for the sales the caller may
-- see (the creator's own, the campaign's business's, an admin every one),
-- until when each one's commission is held: the hold of its live transfer's
-- pending legs, none once they were released or reversed. At most one page of
-- ids a call, whatever the array's shape (a slice [1:200] of a 2-D array
-- keeps every inner element).
CREATE FUNCTION oros_live_sale_holds(p_sales uuid[]) RETURNS TABLE (id uuid, held_until timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT s.id, (SELECT min(l.hold_until) FROM ledger_entries AS l
                 WHERE l.transfer_id = s.transfer_id AND l.status = 'pending')
    FROM live_sales AS s
   WHERE s.id IN (SELECT u.id FROM unnest(p_sales) WITH ORDINALITY AS u (id, n) WHERE u.n <= 200)
     AND (s.creator_id = auth.uid() OR auth.is_admin()
          OR s.campaign_id IN (SELECT c.id FROM campaigns AS c WHERE c.business_id = auth.uid()));
$$;

REVOKE ALL ON FUNCTION oros_live_sale_holds(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oros_live_sale_holds(uuid[]) TO oros_app;
