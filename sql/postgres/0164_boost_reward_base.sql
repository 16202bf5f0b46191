-- Why: a paid boost reward's refunds are computed again from its base
-- (rewards.spent, 0155: what the boost's money had paid out when the reward
-- was fixed); a paid one without it would be taken back from nothing. 0155
-- stored it at every completion and backfilled the rewards paid before, so
-- this states what it relies on.
ALTER TABLE rewards ADD CONSTRAINT reward_boost_paid_has_base
  CHECK (source IS DISTINCT FROM 'boost' OR status IS DISTINCT FROM 'paid' OR spent IS NOT NULL);
