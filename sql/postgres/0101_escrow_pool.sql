-- Why: once supporters boost a campaign, its escrow holds the money of
-- several payers (the business's fundings and each boost), and three rules
-- need to know whose money is still there: a boost's reward (a share of what
-- its money paid out), the unspent money given back when the campaign ends,
-- and a takeback (a refund or dispute of one payer's card must recover that
-- payer's unspent money, never another's). Tracking every payout per payer
-- would touch the settler's hot path; instead the escrow of a campaign is a
-- pool of units, as a fund's shares are:
--  * money in (a funding, a boost, a reinstated dispute) buys units at the
--    pool's price, so the price does not move; money taken out for one payer
--    (a takeback, a refund of unspent money) sells that payer's units at the
--    price, which does not move either;
--  * money spent (a payout) or given back to the budget (a refunded sale)
--    moves remaining_budget alone, and the price with it: every payer pays
--    each payout in proportion to what it still holds at that moment.
-- So a boost's value at any moment is pool_units x pool_price, and the
-- business holds the rest, remaining_budget - the boosts' values. Only
-- boosts keep units: the business's share is what is left.
-- A pool that is empty (remaining 0) or whose units are worth nothing
-- (price 0: everything spent, then a refunded sale returned money that no
-- payer's units share) starts a new epoch at price 1 when money comes in:
-- units of an older epoch are worth nothing. Money returned to a worthless
-- pool is therefore the business's.
-- The price is kept by a trigger on the two budget columns, so no writer of
-- them (settlement, refunds, fundings, takebacks, boosts) can forget it.
ALTER TABLE campaigns
  ADD COLUMN pool_price NUMERIC NOT NULL DEFAULT 1 CHECK (pool_price >= 0),
  ADD COLUMN pool_epoch INTEGER NOT NULL DEFAULT 0;

ALTER TABLE boosts
  ADD COLUMN pool_units NUMERIC NOT NULL DEFAULT 0 CHECK (pool_units >= 0),
  ADD COLUMN pool_epoch INTEGER NOT NULL DEFAULT 0;

-- p_num / p_den to 30 places (a price, a unit count): far below a cent on any
-- budget NUMERIC(12,2) holds. The dividend's scale sets the quotient's.
CREATE FUNCTION oros_pool_div(p_num numeric, p_den numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT round(p_num::numeric(80, 40) / p_den, 30)
$$;

-- Money in or out at the price, then what was spent or given back moves the price.
-- No update mixes the two today; in that order, one that did would stay fair.
CREATE FUNCTION campaigns_pool_price() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_in numeric := NEW.funded_budget - OLD.funded_budget;
  v_base numeric := OLD.remaining_budget + v_in;
  v_price numeric := OLD.pool_price;
BEGIN
  IF v_in > 0 AND (OLD.remaining_budget = 0 OR OLD.pool_price = 0) THEN
    NEW.pool_epoch := OLD.pool_epoch + 1;
    v_price := 1;
  ELSE
    NEW.pool_epoch := OLD.pool_epoch;
  END IF;
  NEW.pool_price := CASE WHEN v_base > 0 THEN oros_pool_div(v_price * NEW.remaining_budget, v_base) ELSE 0 END;
  RETURN NEW;
END;
$$;
CREATE TRIGGER campaigns_pool_price BEFORE UPDATE OF funded_budget, remaining_budget ON campaigns
  FOR EACH ROW EXECUTE FUNCTION campaigns_pool_price();

-- What each boost still holds in its campaign's escrow (unrounded): the one
-- place the value rule is written. Read by the owner's functions and views
-- only; no request role is granted it.
CREATE VIEW boost_values AS
SELECT b.id AS boost_id, b.campaign_id,
       CASE WHEN b.pool_epoch = c.pool_epoch THEN round(b.pool_units * c.pool_price, 30) ELSE 0 END AS value
  FROM boosts b JOIN campaigns c ON c.id = b.campaign_id;

-- What the business still holds in a campaign's escrow, in whole cents (its
-- fraction of a cent stays with the boosts' side of the pool).
CREATE FUNCTION oros_business_unspent(p_campaign uuid) RETURNS numeric
LANGUAGE sql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT greatest(0, trunc(c.remaining_budget
                           - coalesce((SELECT sum(v.value) FROM boost_values v WHERE v.campaign_id = c.id), 0), 2))
    FROM campaigns c WHERE c.id = p_campaign
$$;
