-- Why: customer.subscription.updated was applied in whatever order Stripe
-- delivered it (Stripe does not promise order). A stale update -- sent before
-- a cancel, with cancel_at_period_end false -- delivered after the cancel
-- cleared the cancel flag and ends_at: the membership looked as if it would
-- renew while Stripe ended it at the period's end. Each membership now keeps
-- the creation time of the Stripe state it last applied (stripe_state_at: the
-- event's `created`; for a cancel through our API, the moment Stripe accepted
-- it), and an update created before that is ignored ('stale'). Stripe stamps
-- events in whole seconds: an update of the same second is applied (the
-- fields it sets are Stripe's state at that second either way). Ending
-- (canceled, unpaid, incomplete_expired, or the subscription deleted) stays
-- final whatever its order, as before.

ALTER TABLE memberships ADD COLUMN stripe_state_at TIMESTAMPTZ;

-- 0078's, ignoring an update older than the state last applied.
DROP FUNCTION oros_membership_changed(text, text, boolean, timestamptz);
CREATE FUNCTION oros_membership_changed(p_subscription text, p_status text, p_cancel_at_period_end boolean,
                                        p_period_end timestamptz, p_event_created timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row memberships;
BEGIN
  IF p_status IN ('canceled', 'unpaid', 'incomplete_expired') THEN
    RETURN oros_end_membership(p_subscription);
  END IF;
  SELECT * INTO v_row FROM memberships WHERE billing_provider_id = p_subscription FOR UPDATE;
  IF NOT FOUND THEN
    RETURN 'no_membership';
  END IF;
  IF v_row.status IN ('canceled', 'expired') THEN
    RETURN 'already_ended';
  END IF;
  IF p_event_created IS NULL THEN
    RAISE EXCEPTION 'a subscription update needs its event''s creation time' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_event_created < v_row.stripe_state_at THEN
    RETURN 'stale';
  END IF;
  UPDATE memberships
     SET cancel_at_period_end = coalesce(p_cancel_at_period_end, cancel_at_period_end),
         current_period_end = coalesce(p_period_end, current_period_end),
         ends_at = CASE WHEN coalesce(p_cancel_at_period_end, cancel_at_period_end)
                        THEN coalesce(p_period_end, current_period_end) END,
         stripe_state_at = p_event_created
   WHERE id = v_row.id;
  RETURN 'updated';
END;
$$;
REVOKE ALL ON FUNCTION oros_membership_changed(text, text, boolean, timestamptz, timestamptz) FROM PUBLIC;
-- The webhook only (the caller check is this grant): Stripe's state of a subscription.
GRANT EXECUTE ON FUNCTION oros_membership_changed(text, text, boolean, timestamptz, timestamptz) TO oros_api;

-- 0078's, stamping the cancel Stripe just accepted: updates sent before it are stale.
CREATE OR REPLACE FUNCTION oros_request_membership_cancel(p_id uuid, p_period_end timestamptz) RETURNS memberships
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  v_row memberships;
BEGIN
  SELECT * INTO v_row FROM memberships WHERE id = p_id AND user_id = auth.uid() FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'membership % is not the caller''s', p_id USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF v_row.status = 'pending' THEN
    UPDATE memberships SET status = 'canceled', cancel_at_period_end = true, ends_at = now()
     WHERE id = p_id RETURNING * INTO v_row;
  ELSIF v_row.status = 'active' THEN
    UPDATE memberships
       SET cancel_at_period_end = true,
           current_period_end = coalesce(p_period_end, current_period_end),
           ends_at = coalesce(p_period_end, current_period_end),
           stripe_state_at = greatest(stripe_state_at, now())
     WHERE id = p_id RETURNING * INTO v_row;
  END IF;
  RETURN v_row;
END;
$$;
