-- Why: the seed's rewards table says who earned how much from which source
-- ('boost', 'share', 'prediction') and whether it is paid, but not what it was
-- earned on, for what, or which ledger transfer paid it. Two flows write it
-- (boosts, and supporters' share links), so its shape is settled here, once:
--  * campaign_id: the campaign it was earned on (both sources);
--  * boost_id: the boost it rewards (source 'boost': required, one reward per
--    boost; NULL for 'share', whose rows may carry their own references);
--  * transfer_id, paid_at: the ledger transfer that paid it and when (NULL
--    while pending, and for a reward that came to 0.00: nothing was booked).
-- The seed's columns stay; amount may now be 0.00, because a boost's reward
-- is recorded pending when the boost is credited and fixed when its campaign
-- completes, which may find nothing of the boost spent. 'prediction' stays
-- allowed: no flow produces it (docs/supporters.md).
--
-- Who pays a reward the platform grants (a boost's): the platform, booked to
-- a new wallet of the system user, purpose 'rewards', debit-normal -- an
-- expense account, as a ledger keeps one: it only grows, and the platform's
-- net revenue is fees - rewards. Debiting the fee wallet instead would make a
-- campaign's completion depend on the platform's settled fee balance (fees are
-- held as long as earnings are), and a completion must never fail for it.
ALTER TABLE rewards
  ADD COLUMN campaign_id UUID REFERENCES campaigns(id) ON DELETE CASCADE,
  ADD COLUMN boost_id UUID UNIQUE REFERENCES boosts(id) ON DELETE CASCADE,
  ADD COLUMN transfer_id UUID,
  ADD COLUMN paid_at TIMESTAMPTZ,
  DROP CONSTRAINT rewards_amount_check,
  ADD CONSTRAINT rewards_amount_check CHECK (amount >= 0),
  ADD CONSTRAINT reward_boost_named CHECK (source IS DISTINCT FROM 'boost' OR boost_id IS NOT NULL),
  ADD CONSTRAINT reward_paid_when CHECK ((status = 'paid') = (paid_at IS NOT NULL)),
  ADD CONSTRAINT reward_paid_by_transfer CHECK (transfer_id IS NULL OR status = 'paid');
CREATE INDEX idx_rewards_user_created ON rewards(user_id, created_at);
CREATE INDEX idx_rewards_campaign ON rewards(campaign_id);

GRANT SELECT (campaign_id, boost_id, transfer_id, paid_at) ON rewards TO oros_app;

ALTER TABLE wallets DROP CONSTRAINT wallets_purpose_check;
ALTER TABLE wallets ADD CONSTRAINT wallets_purpose_check
  CHECK (purpose IN ('main', 'escrow', 'fees', 'clearing', 'receivable', 'rewards'));
ALTER TABLE wallets ADD CONSTRAINT rewards_is_an_expense
  CHECK (purpose <> 'rewards' OR normal_balance = 'debit');
INSERT INTO wallets (user_id, purpose, normal_balance)
VALUES ('00000000-0000-0000-0000-000000000001', 'rewards', 'debit')
ON CONFLICT (user_id, purpose) DO NOTHING;
